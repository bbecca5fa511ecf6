"""A stand-in for every upstream host of the config (test code; loopback only, stops by itself).

    from tests.upstream import Behaviour, Catalogue, UpstreamServer
    catalogue = Catalogue(config, cache_dir, fraction=0.01)
    with UpstreamServer(catalogue, (Behaviour("unavailable", "files.rcsb.org/*", times=1),)) as up:
        os.environ["BIHMF_UPSTREAM_BASE"] = up.base_url   # the download code now talks to it
        ...
        assert not [r for r in up.requests if "Range" in r.headers and r.route == "drive.google.com/uc"]

``catalogue`` holds the content (:mod:`tests.upstream.datasets`, :mod:`tests.upstream.structures`),
``server`` the hostile HTTP side. The rehearsal ``bench/download_rehearsal.py`` runs the whole
workflow's downloads against it.
"""

from tests.upstream.catalogue import Catalogue
from tests.upstream.server import KINDS, Behaviour, Request, UpstreamServer

__all__ = ["KINDS", "Behaviour", "Catalogue", "Request", "UpstreamServer"]
