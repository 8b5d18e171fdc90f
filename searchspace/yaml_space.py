"""Loading a search space from a YAML file; every error names the file and line to fix."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from archetype.errors import SpecError
from archetype.searchspace.architecture import INPUT
from archetype.searchspace.cell import MAX_CELL_NODES, Cell, CellSpace, Piece
from archetype.searchspace.operator import CATEGORIES, PRECISIONS, get_operator, make_operator
from archetype.searchspace.relations import operators_in_category
from archetype.searchspace.space import Candidate, SearchSpace, Slot, repeated
from archetype.searchspace.types import TENSOR_TYPES, TensorType, Vector, parse_type

TOP_KEYS = ("name", "description", "input", "output", "adapters", "precision", "slots", "cells", "skeleton")
CELL_KEYS = ("name", "nodes", "edges", "inputs", "categories", "candidates")
PIECE_KEYS = ("name", "cell", "repeat")
MAX_REPEAT = 256
SLOT_KEYS = ("name", "categories", "candidates", "skip", "repeat")
CATEGORY_KEYS = ("category", "layout")
CLASSES = "$classes"
SLOT_NAME = re.compile(r"[\w.-]+")
MERGE_TAG = "tag:yaml.org,2002:merge"


def load_space_yaml(path: str | Path, input_type: TensorType, num_classes: int) -> SearchSpace:
    """Load and validate a space file, fitted to the data's input type and number of classes."""
    return _SpaceFile(Path(path), num_classes).load(input_type)


class _SpaceFile:
    """One space file being read; ``fail`` raises the one-line SpecError at a node's line."""

    def __init__(self, path: Path, num_classes: int) -> None:
        self.path = path
        self.num_classes = num_classes
        self.slot: str | None = None  # the slot being read, named in messages

    def fail(self, node: Node | None, what: str) -> NoReturn:
        where = str(self.path) if node is None else f"{self.path}:{node.start_mark.line + 1}"
        slot = "" if self.slot is None else f"slot '{self.slot}': "
        raise SpecError(f"{where}: {slot}{what}")

    def load(self, input_type: TensorType) -> SearchSpace:
        try:
            root = yaml.compose(self.path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        except OSError as exc:
            raise SpecError(f"{self.path}: cannot read the space file: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise SpecError(f"{self.path}: not a text file") from None
        except yaml.YAMLError as exc:
            self.yaml_error(exc)
        except RecursionError:
            raise SpecError(f"{self.path}: nested too deeply") from None
        if not isinstance(root, MappingNode):
            self.fail(root, "the top level must be a mapping with a 'slots' list")
        top = self.mapping(root, "the top level", TOP_KEYS)
        if "cells" in top or "skeleton" in top:
            return self.cell_space(root, top, input_type)
        if "slots" not in top:
            self.fail(root, "missing 'slots' (or 'cells' and 'skeleton' for a cell space)")
        name = self.text(top["name"], "name") if "name" in top else self.path.stem
        description = self.text(top["description"], "description", one_line=False) if "description" in top else ""
        if "input" in top:
            given = self.tensor_type(top["input"], "input")
            if given != input_type:
                self.fail(top["input"], f"input {given} does not match the data's input type {input_type}")
        output = self.tensor_type(top["output"], "output") if "output" in top else Vector(self.num_classes)
        adapters = self.flag(top["adapters"], "adapters") if "adapters" in top else False
        slots = self.slots(top["slots"])
        space = SearchSpace(
            name=name, input=input_type, output=output, slots=slots, description=description, adapters=adapters
        )
        if "precision" in top:
            space = space.with_precision(self.precisions(top["precision"]))
        try:
            space.sample(np.random.default_rng(0))
        except SpecError as exc:  # the sampler's message ends with its last type error
            last = str(exc).partition("; last: ")[2] or str(exc)
            raise SpecError(f"{self.path}: no well-typed architecture: {last}") from None
        return space

    def cell_space(self, root: Node, top: dict[str, Node], input_type: TensorType) -> SearchSpace:
        """A space of ``cells`` (typed DAGs whose edges are searched) placed in a fixed ``skeleton``."""
        for key in ("slots", "adapters", "precision"):
            if key in top:
                self.fail(top[key], f"a cell space has 'cells' and 'skeleton', not {key!r}")
        if "cells" not in top or "skeleton" not in top:
            self.fail(root, "a cell space needs both 'cells' and 'skeleton'")
        name = self.text(top["name"], "name") if "name" in top else self.path.stem
        if "input" in top and self.tensor_type(top["input"], "input") != input_type:
            self.fail(top["input"], f"input does not match the data's input type {input_type}")
        output = self.tensor_type(top["output"], "output") if "output" in top else Vector(self.num_classes)
        cells = self.cells(top["cells"])
        pieces = self.skeleton(top["skeleton"], {c.name for c in cells})
        text = self.path.read_text(encoding="utf-8")
        macro = {"space": name, "classes": self.num_classes, "file": hashlib.sha256(text.encode()).hexdigest()[:16]}
        description = self.text(top["description"], "description", one_line=False) if "description" in top else ""
        space = CellSpace.of(name, input_type, output, cells, pieces, macro, description)
        try:
            space.sample(np.random.default_rng(0))
        except SpecError as exc:
            last = str(exc).partition("; last: ")[2] or str(exc)
            raise SpecError(f"{self.path}: no well-typed architecture: {last}") from None
        return space

    def cells(self, node: Node) -> tuple[Cell, ...]:
        if not isinstance(node, SequenceNode) or not node.value:
            self.fail(node, "'cells' must be a non-empty list of cells")
        cells: list[Cell] = []
        for cell_node in node.value:
            self.slot = None
            fields = self.mapping(cell_node, "a cell", CELL_KEYS)
            for key in ("name", "nodes", "candidates"):
                if key not in fields:
                    self.fail(cell_node, f"a cell has no {key!r}")
            name = self.text(fields["name"], "cell name")
            if not SLOT_NAME.fullmatch(name) or "." in name or any(c.name == name for c in cells):
                self.fail(fields["name"], f"cell name {name!r} must be new and hold only letters, digits, '_', '-'")
            self.slot = name
            nodes = self.value(fields["nodes"])
            if type(nodes) is not int or not 2 <= nodes <= MAX_CELL_NODES:
                self.fail(fields["nodes"], f"'nodes' must be an integer 2..{MAX_CELL_NODES}, got {nodes!r}")
            inputs = self.value(fields["inputs"]) if "inputs" in fields else 0
            if type(inputs) is not int or inputs < 0:
                self.fail(fields["inputs"], f"'inputs' must be a positive integer, got {inputs!r}")
            edges = self.edges(fields["edges"], nodes) if "edges" in fields else ()
            if not inputs and "edges" not in fields:
                self.fail(cell_node, "a cell needs 'edges' (a list of [i, j], or 'all') or 'inputs' per node")
            categories = self.categories(fields["categories"]) if "categories" in fields else ("shape-preserving",)
            cand_node = fields["candidates"]
            if not isinstance(cand_node, SequenceNode) or not cand_node.value:
                self.fail(cand_node, "'candidates' must be a non-empty list of operators")
            candidates = [c for item in cand_node.value for c in self.candidates(item)[0]]
            try:
                cells.append(Cell(name, nodes, edges, tuple(candidates), categories, inputs))
            except SpecError as exc:
                self.fail(cell_node, str(exc))
        self.slot = None
        return tuple(cells)

    def edges(self, node: Node, nodes: int) -> tuple[tuple[int, int], ...]:
        value = self.value(node)
        if value == "all":
            return tuple((i, j) for j in range(1, nodes) for i in range(j))
        if not isinstance(value, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(type(v) is int for v in e) for e in value
        ):
            self.fail(node, f"'edges' must be 'all' or a list of [from, to] node pairs, got {value!r}")
        return tuple((e[0], e[1]) for e in value)

    def skeleton(self, node: Node, cells: set[str]) -> tuple[Piece, ...]:
        """Fixed operators (``{name, op, <hyperparameter>: value}``) and cell placements (``{name, cell, repeat}``)."""
        if not isinstance(node, SequenceNode) or not node.value:
            self.fail(node, "'skeleton' must be a non-empty list of operators and cells")
        pieces: list[Piece] = []
        for item in node.value:
            self.slot = None
            fields = self.mapping(item, "a skeleton piece", None)
            if "name" not in fields:
                self.fail(item, "a skeleton piece has no 'name'")
            name = self.text(fields.pop("name"), "piece name")
            if not SLOT_NAME.fullmatch(name) or any(p.name == name for p in pieces):
                self.fail(item, f"piece name {name!r} must be new and hold only letters, digits, '_', '.', '-'")
            self.slot = name
            if "cell" in fields:
                extra = sorted(set(fields) - set(PIECE_KEYS))
                if extra:
                    self.fail(fields[extra[0]], f"a cell placement takes {list(PIECE_KEYS)}, not {extra[0]!r}")
                cell = self.text(fields["cell"], "cell")
                if cell not in cells:
                    self.fail(fields["cell"], f"unknown cell {cell!r}; cells: {sorted(cells)}")
                count = self.value(fields["repeat"]) if "repeat" in fields else 1
                if type(count) is not int or not 1 <= count <= MAX_REPEAT:
                    self.fail(fields.get("repeat", item), f"'repeat' must be an integer 1..{MAX_REPEAT}, got {count!r}")
                placed = [Piece.of_cell(name if count == 1 else f"{name}.{k}", cell) for k in range(1, count + 1)]
                if {p.name for p in placed} & {p.name for p in pieces}:
                    self.fail(item, f"piece name {name!r} repeats the name of an earlier piece")
                pieces += placed
                continue
            if "op" not in fields:
                self.fail(item, "a skeleton piece needs 'op' (a fixed operator) or 'cell'")
            op = self.text(fields.pop("op"), "op")
            params = {k: self.value(v) for k, v in fields.items()}  # unnamed hyperparameters keep their defaults
            many = [k for k, v in params.items() if isinstance(v, list | dict)]
            if many:
                self.fail(fields[many[0]], f"a skeleton operator is fixed: {many[0]!r} must be one value")
            try:
                make_operator(op, params)
            except SpecError as exc:
                self.fail(item, str(exc))
            pieces.append(Piece.fixed(name, op, params))
        self.slot = None
        return tuple(pieces)

    def slots(self, node: Node) -> tuple[Slot, ...]:
        if not isinstance(node, SequenceNode) or not node.value:
            self.fail(node, "'slots' must be a non-empty list of slots")
        slots: list[Slot] = []
        for slot_node in node.value:
            self.slot = None
            fields = self.mapping(slot_node, "a slot", SLOT_KEYS)
            if "name" not in fields:
                self.fail(slot_node, "a slot has no 'name'")
            name = self.text(fields["name"], "slot name")
            if not SLOT_NAME.fullmatch(name):
                self.fail(fields["name"], f"slot name {name!r} may hold only letters, digits, '_', '.' and '-'")
            self.slot = name
            if any(s.name == self.slot or s.name.startswith(f"{self.slot}.") for s in slots) or name == INPUT:
                self.fail(fields["name"], "another slot has this name (or 'input', which names the network's input)")
            categories = self.categories(fields["categories"]) if "categories" in fields else ()
            cand_node = fields.get("candidates")
            if not isinstance(cand_node, SequenceNode) or not cand_node.value:
                self.fail(cand_node or slot_node, "'candidates' must be a non-empty list of operators")
            candidates: list[Candidate] = []
            for c in cand_node.value:
                expanded, category = self.candidates(c)
                candidates += expanded
                if category is not None and category not in categories:
                    categories = (*categories, category)
            skip = self.skip(fields["skip"], slots) if "skip" in fields else None
            if "repeat" in fields:
                if skip is not None:
                    self.fail(fields["skip"], "a repeated slot cannot have a skip edge; put it on a slot of its own")
                slots += self.repeated(fields["repeat"], tuple(candidates), categories)
            else:
                slots.append(Slot(self.slot, tuple(candidates), categories, skip))
        self.slot = None
        return tuple(slots)

    def skip(self, node: Node, earlier: list[Slot]) -> str:
        source = self.text(node, "skip")
        if source != INPUT and not any(s.name == source for s in earlier):
            self.fail(node, f"skip edge from {source!r}: not 'input' or the name of an earlier slot")
        return source

    def repeated(self, node: Node, candidates: tuple[Candidate, ...], categories: tuple[str, ...]) -> tuple[Slot, ...]:
        """``repeat: n`` makes n copies; ``repeat: [min, max]`` searches the depth between them."""
        depth = self.value(node)
        if isinstance(depth, list) and len(depth) == 2 and all(type(d) is int for d in depth):
            depth = (depth[0], depth[1])
        elif type(depth) is not int:
            self.fail(node, f"'repeat' must be a count n or [min, max], got {depth!r}")
        try:
            return repeated(self.slot or "", candidates, depth, categories)
        except SpecError as exc:
            self.fail(node, str(exc).removeprefix(f"slot '{self.slot}': "))

    def categories(self, node: Node) -> tuple[str, ...]:
        categories = []
        for item in self.value_nodes(node):
            categories.append(self.value(item))
            if categories[-1] not in CATEGORIES:
                self.fail(item, f"unknown category {categories[-1]!r}; known: {', '.join(CATEGORIES)}")
        return tuple(categories)

    def candidates(self, node: Node) -> tuple[list[Candidate], str | None]:
        """One operator, or with ``category:`` every registered operator of that category (and the category)."""
        fields = self.mapping(node, "a candidate", None)
        if "category" in fields and "op" not in fields:
            return self.category_candidates(fields), self.value(fields["category"])
        return [self.candidate(node, fields)], None

    def category_candidates(self, fields: dict[str, Node]) -> list[Candidate]:
        for key, value_node in fields.items():
            if key not in CATEGORY_KEYS:
                allowed = ", ".join(CATEGORY_KEYS)
                self.fail(value_node, f"unknown key {key!r} in a category candidate; allowed: {allowed}")
        category = self.value(fields["category"])
        if category not in CATEGORIES:
            self.fail(fields["category"], f"unknown category {category!r}; known: {', '.join(CATEGORIES)}")
        layout_name = self.text(fields["layout"], "layout") if "layout" in fields else "Image"
        layout = TENSOR_TYPES.get(layout_name)
        if layout is None:
            self.fail(fields["layout"], f"unknown layout {layout_name!r}; known: {', '.join(TENSOR_TYPES)}")
        found = operators_in_category(category, layout)
        if not found:
            self.fail(fields["category"], f"no registered operator is {category} on {layout_name}")
        return [
            Candidate.of(op.name, {"classes": self.num_classes} if "classes" in op.hyperparameters() else {})
            for op in found
        ]

    def candidate(self, node: Node, fields: dict[str, Node]) -> Candidate:
        if "op" not in fields:
            self.fail(node, "a candidate has no 'op' (or 'category')")
        op_node = fields.pop("op")
        op = self.text(op_node, "op")
        try:
            cls = get_operator(op)
        except SpecError as exc:
            self.fail(op_node, str(exc))
        values: dict[str, Any] = {}
        for key, value_node in fields.items():
            if key not in cls.hyperparameters():
                known = list(cls.hyperparameters())
                self.fail(value_node, f"operator '{op}' has no hyperparameter {key!r}; it takes {known}")
            values[key] = self.value(value_node)
            if values[key] == []:
                self.fail(value_node, f"hyperparameter {key!r} has no values")
        try:
            candidate = Candidate.of(op, values)
        except SpecError as exc:
            self.fail(node, str(exc))
        self.check_values(candidate, fields, node)
        return candidate

    def check_values(self, candidate: Candidate, fields: dict[str, Node], node: Node) -> None:
        """Build the operator once for every value searched, so a bad value fails at its own line."""
        domain = dict(candidate.domain)
        first = {k: v[0] for k, v in domain.items()}
        try:
            make_operator(candidate.op, first)
        except SpecError as exc:
            culprit = next((k for k in fields if self.builds(candidate.op, first, k)), None)
            self.fail(self.value_nodes(fields[culprit])[0] if culprit else node, str(exc))
        for key, value_node in fields.items():
            for value, item in zip(domain[key][1:], self.value_nodes(value_node)[1:], strict=False):
                try:
                    make_operator(candidate.op, {**first, key: value})
                except SpecError as exc:
                    self.fail(item, str(exc))

    @staticmethod
    def builds(op: str, params: dict[str, Any], without: str) -> bool:
        """Whether ``op`` builds once ``without`` goes back to its default: then that value is to blame."""
        trial = {k: v for k, v in params.items() if k != without}
        default = get_operator(op).domain.get(without)
        if default:
            trial[without] = default[0]
        try:
            make_operator(op, trial)
        except SpecError:
            return False
        return True

    @staticmethod
    def value_nodes(node: Node) -> list[Node]:
        return list(node.value) if isinstance(node, SequenceNode) else [node]

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...] | None) -> dict[str, Node]:
        """Key -> value node of a mapping node; refuses other nodes, odd keys and repeated keys."""
        if not isinstance(node, MappingNode):
            self.fail(node, f"{what} must be a mapping")
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag != MERGE_TAG:
                key = self.key(key_node)
                if key in seen:
                    self.fail(key_node, f"key {key!r} appears twice in {what}")
                seen.add(key)
        merged = MappingNode(node.tag, list(node.value), node.start_mark, node.end_mark)
        try:
            SafeConstructor().flatten_mapping(merged)  # resolves '<<' merge keys on a copy
        except yaml.YAMLError as exc:
            self.yaml_error(exc)
        fields: dict[str, Node] = {}
        for key_node, value_node in merged.value:
            key = self.key(key_node)
            if allowed is not None and key not in allowed:
                self.fail(key_node, f"unknown key {key!r} in {what}; allowed: {', '.join(allowed)}")
            fields[key] = value_node
        return fields

    def key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            self.fail(node, "a key must be a plain name, not a list or mapping")
        return str(node.value)

    def value(self, node: Node) -> Any:
        """The plain Python value of a node, with ``$classes`` replaced by the number of classes."""
        try:
            value = SafeConstructor().construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.yaml_error(exc)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. the date 2001-02-31
            self.fail(node, f"bad value: {exc}")
        if isinstance(value, list):
            return [self.num_classes if v == CLASSES else v for v in value]
        return self.num_classes if value == CLASSES else value

    def text(self, node: Node, what: str, one_line: bool = True) -> str:
        value = self.value(node)
        if not isinstance(value, str) or not value or (one_line and not value.isprintable()):
            self.fail(node, f"{what} must be a non-empty one-line string, got {value!r}")
        return value

    def precisions(self, node: Node) -> tuple[str, ...]:
        """The precisions searched per slot, e.g. ``[fp32, int8]``."""
        value = self.value(node)
        listed = value if isinstance(value, list) else [value]
        if not listed or any(v not in PRECISIONS for v in listed) or len(set(listed)) < len(listed):
            self.fail(node, f"precision must be a list of distinct values among {list(PRECISIONS)}, got {value!r}")
        return tuple(listed)

    def flag(self, node: Node, what: str) -> bool:
        value = self.value(node)
        if not isinstance(value, bool):
            self.fail(node, f"{what} must be true or false, got {value!r}")
        return value

    def tensor_type(self, node: Node, what: str) -> TensorType:
        text = self.text(node, what)
        try:
            return parse_type(text)
        except ValueError as exc:
            self.fail(node, f"bad {what} type: {exc}")

    def yaml_error(self, exc: yaml.YAMLError) -> NoReturn:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        if getattr(exc, "context", None):
            problem = f"{exc.context}, {problem}"  # type: ignore[attr-defined]
        where = f"{self.path}:{mark.line + 1}" if mark is not None else str(self.path)
        raise SpecError(f"{where}: not valid YAML: {' '.join(problem.split())}") from None
