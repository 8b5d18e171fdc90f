"""The web dashboard: read-only pages and a JSON API over the store (``archetype dashboard``)."""
