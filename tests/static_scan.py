"""WhiteNoise's scan of the static files, done once per test process instead of once per test client.

Django's test `Client` builds its middleware chain on its first request, so every test that uses the
`client` fixture builds a new WhiteNoiseMiddleware, which walks every static file through the finders
and stats it with its compressed variants (WHITENOISE_USE_FINDERS). In the whole suite that scan was
about 4% of the xdist workers' samples, for the same 220 files each time. The scan's result (url ->
StaticFile, immutable once built) is kept per static prefix and copied into the next middleware: it
serves exactly the files the scan would find, as long as no test adds a static file, and none does.
"""

from whitenoise.middleware import WhiteNoiseMiddleware

_whitenoise_scan = WhiteNoiseMiddleware.add_files_from_finders
_scanned: dict[str, dict] = {}


def add_files_from_finders(self) -> None:
    if self.static_prefix not in _scanned:
        kept, self.files = self.files, {}
        try:
            _whitenoise_scan(self)
            _scanned[self.static_prefix] = self.files
        finally:
            self.files = {**kept, **self.files}
    else:
        self.files.update(_scanned[self.static_prefix])


def install() -> None:
    WhiteNoiseMiddleware.add_files_from_finders = add_files_from_finders
