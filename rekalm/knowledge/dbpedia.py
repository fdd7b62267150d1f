"""DBpedia as the knowledge lookup sees it: the vocabulary IRIs its queries use, and the
global ``dbpedia:`` config block (:class:`DbpediaSettings`): where to ask (the public
endpoint or a local dump served by oxigraph), how much at a time (``batch_size`` URIs
per VALUES block, ``page_size`` rows per page) and how politely (delay, budget, timeout,
retries and backoff, handed to the SPARQL client by :meth:`DbpediaSettings.client_settings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rekalm.knowledge.sparql import ClientSettings

RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
DBO_ABSTRACT = "http://dbpedia.org/ontology/abstract"
DBO_REDIRECTS = "http://dbpedia.org/ontology/wikiPageRedirects"


@dataclass(frozen=True)
class DbpediaSettings:
    """The global ``dbpedia:`` config block."""

    endpoint: str = "https://dbpedia.org/sparql"
    local_dump: tuple[str, ...] | None = None
    local_store_dir: str = "results/cache/oxigraph"
    cache_dir: str | None = "results/cache/sparql"
    batch_size: int = 50
    page_size: int = 10000
    request_delay_s: float = 0.5
    max_requests: int | None = None
    timeout_s: float = 60  # an int, as config files give it: settings are fingerprinted
    retries: int = 5
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 120.0
    max_retry_after_s: float = 300.0  # a server's Retry-After beyond this fails the lookup
    language: str = "en"
    label_lookup: bool = True
    year_tolerance: int = 1

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> DbpediaSettings:
        block = dict(block or {})
        backoff = block.pop("backoff", None) or {}
        known = {name for name in cls.__dataclass_fields__ if not name.startswith("backoff")}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"dbpedia: unknown key(s) {unknown}; known: {sorted(known | {'backoff'})}")
        if block.get("local_dump") is not None:
            dump = block["local_dump"]
            block["local_dump"] = (dump,) if isinstance(dump, str) else tuple(dump)
            if not block["local_dump"]:
                block["local_dump"] = None
        settings = cls(
            **block,
            backoff_initial_s=float(backoff.get("initial_s", cls.backoff_initial_s)),
            backoff_max_s=float(backoff.get("max_s", cls.backoff_max_s)),
        )
        for key in ("batch_size", "page_size"):
            if int(getattr(settings, key)) < 1:
                raise ValueError(f"dbpedia.{key}: expected a positive integer, got {getattr(settings, key)}")
        return settings

    def client_settings(self) -> ClientSettings:
        return ClientSettings(
            timeout_s=self.timeout_s,
            retries=self.retries,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
            max_retry_after_s=self.max_retry_after_s,
            request_delay_s=self.request_delay_s,
            max_requests=self.max_requests,
        )
