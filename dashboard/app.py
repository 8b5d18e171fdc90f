"""The dashboard's web app: read-only JSON routes under /api, four thin pages, and Plotly.js served locally."""

from __future__ import annotations

import gc
import secrets
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from html import escape
from pathlib import Path
from string import Template
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import TypeAdapter

from archetype.dashboard import queries
from archetype.errors import StorageError
from archetype.result import TrialState
from archetype.store import UPGRADE_COMMAND, Store

HERE = Path(__file__).parent
_STUDY_VIEW_JSON = TypeAdapter(queries.StudyView)
_STUDY_CACHE_SIZE = 8
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
    ),
}

StudyName = Annotated[str, PathParam(min_length=1, max_length=255, description="the study's name")]
RunName = Annotated[str, PathParam(min_length=1, max_length=255, description="the compression run's name")]
TrialNumber = Annotated[int, PathParam(ge=1, le=2**31 - 1, description="the trial's number within its study")]


def plotly_js() -> Path:
    """The minified Plotly.js that the installed ``plotly`` package ships."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"the installed plotly package has no {path}; reinstall plotly")
    return path


class _StudyViews:
    """The last few study views, recomputed only when the study has changed (a trial was stored or it ended)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._views: OrderedDict[str, tuple[object, queries.StudyView]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> queries.StudyView:
        study = self._store.get_study(name)
        version = (study.updated_at, study.status)
        with self._lock:
            cached = self._views.get(name)
            if cached is not None and cached[0] == version:
                self._views.move_to_end(name)
                return cached[1]
        with _collection_paused():
            view = queries.study_view(self._store, name)
        with self._lock:
            self._views[name] = (version, view)
            while len(self._views) > _STUDY_CACHE_SIZE:
                self._views.popitem(last=False)
        return view


@contextmanager
def _collection_paused() -> Iterator[None]:
    """No cyclic garbage collection while a study view is built: it allocates tens of thousands of acyclic
    objects, which would trigger full collections of everything the server holds; freed by reference counts."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def create_app(store: Store, token: str | None = None) -> FastAPI:
    """The app serving ``store`` read-only; with ``token`` every route needs ``?token=`` or a Bearer header."""
    app = FastAPI(
        title="Archetype dashboard",
        description="Read-only views of the studies, trials and compression runs in an Archetype store.",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    studies = _StudyViews(store)
    files = {"plotly.min.js": plotly_js(), "dashboard.js": HERE / "static" / "dashboard.js",
             "style.css": HERE / "static" / "style.css"}

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if token is not None and not _authorised(request, token):
            response: Response = JSONResponse(
                {"detail": "this dashboard needs its token: add ?token=... or an 'Authorization: Bearer' header"},
                status_code=401, headers={"WWW-Authenticate": "Bearer"},
            )
        else:
            response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    @app.exception_handler(StorageError)
    async def storage_error(request: Request, exc: StorageError) -> JSONResponse:
        missing = str(exc).startswith("no ")
        return JSONResponse({"detail": str(exc)}, status_code=404 if missing else 503)

    # the JSON API

    @app.get("/api/studies", tags=["api"], summary="Every study and compression run")
    def api_overview() -> queries.Overview:
        return queries.overview(store)

    @app.get("/api/studies/{name}", tags=["api"], summary="A study's points, feasible front, progress and operators",
             response_model=queries.StudyView)
    def api_study(name: StudyName) -> Response:
        # tens of thousands of points: serialised in one pass by pydantic's JSON writer, not field by field
        return Response(_STUDY_VIEW_JSON.dump_json(studies.get(name)), media_type="application/json")

    @app.get("/api/studies/{name}/trials", tags=["api"], summary="A page of a study's trials, sorted and filtered")
    def api_trials(
        name: StudyName,
        state: Annotated[list[TrialState] | None, Query(description="keep trials in these states")] = None,
        budget: Annotated[
            Literal["within", "over"] | None,
            Query(description="within: complete trials meeting every constraint; over: all others"),
        ] = None,
        sort: Annotated[
            str, Query(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$", description="a trial column or a metric name")
        ] = "number",
        order: Literal["asc", "desc"] = "asc",
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> queries.TrialTable:
        within = None if budget is None else budget == "within"
        try:
            return queries.trial_table(
                store, name, states=state, within_budget=within, sort=sort, descending=order == "desc",
                offset=offset, limit=limit,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.get("/api/studies/{name}/trials/{number}", tags=["api"], summary="One trial: architecture, values, error")
    def api_trial(name: StudyName, number: TrialNumber) -> queries.TrialView:
        return queries.trial_view(store, name, number)

    @app.get("/api/compressions/{name}", tags=["api"], summary="A compression run with its steps and waterfalls")
    def api_compression(name: RunName) -> queries.CompressionView:
        return queries.compression_view(store, name)

    # pages

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def studies_page(request: Request) -> HTMLResponse:
        return _page(request, "studies", "Studies and compression runs", {})

    @app.get("/studies/{name}", response_class=HTMLResponse, include_in_schema=False)
    def study_page(request: Request, name: StudyName) -> HTMLResponse:
        store.get_study(name)
        return _page(request, "study", f"Study {name}", {"study": name})

    @app.get("/studies/{name}/trials/{number}", response_class=HTMLResponse, include_in_schema=False)
    def trial_page(request: Request, name: StudyName, number: TrialNumber) -> HTMLResponse:
        store.trial(name, number)
        return _page(request, "trial", f"Trial {number} of {name}", {"study": name, "number": str(number)})

    @app.get("/compressions/{name}", response_class=HTMLResponse, include_in_schema=False)
    def compression_page(request: Request, name: RunName) -> HTMLResponse:
        store.compression_run(name)
        return _page(request, "compression", f"Compression {name}", {"run": name})

    @app.get("/static/{filename}", include_in_schema=False)
    def static_file(filename: Annotated[str, PathParam(max_length=64)]) -> FileResponse:
        if filename not in files:
            raise HTTPException(404, f"no static file {filename!r}")
        return FileResponse(files[filename], headers={"Cache-Control": "max-age=3600"})

    return app


def create_outdated_app(message: str, token: str | None = None) -> FastAPI:
    """An app whose every route says that the store needs ``archetype db upgrade`` (the dashboard never migrates)."""
    app = FastAPI(title="Archetype dashboard", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if token is not None and not _authorised(request, token):
            response: Response = JSONResponse({"detail": "this dashboard needs its token"}, status_code=401)
        elif request.url.path.startswith("/api/"):
            response = JSONResponse({"detail": message, "upgrade": UPGRADE_COMMAND}, status_code=503)
        else:
            response = HTMLResponse(
                "<!doctype html><html><head><meta charset='utf-8'><title>Archetype: store to upgrade</title></head>"
                f"<body><h1>This store needs an upgrade</h1><p>{escape(message)}</p>"
                f"<p>Run <code>{escape(UPGRADE_COMMAND)} --storage URL</code>, then reload this page "
                "after restarting the dashboard. The dashboard only reads; it never changes the store.</p>"
                "</body></html>",
                status_code=503,
            )
        response.headers.update(_SECURITY_HEADERS)
        return response

    return app


def _authorised(request: Request, token: str) -> bool:
    supplied = request.query_params.get("token")
    header = request.headers.get("authorization", "")
    if supplied is None and header[:7].lower() == "bearer ":
        supplied = header[7:].strip()
    return supplied is not None and secrets.compare_digest(supplied.encode(), token.encode())


def _page(request: Request, page: str, title: str, data: dict[str, str]) -> HTMLResponse:
    """A page: the shared layout around the page's template; its script fetches the data from /api."""
    token = request.query_params.get("token", "")
    query = f"?token={quote(token, safe='')}" if token else ""
    attributes = " ".join(f'data-{key}="{escape(value)}"' for key, value in data.items())
    body = (HERE / "templates" / f"{page}.html").read_text()
    layout = Template((HERE / "templates" / "layout.html").read_text())
    html = layout.substitute(
        title=escape(title), page=page, token=escape(token), query=escape(query), attributes=attributes, body=body
    )
    return HTMLResponse(html)
