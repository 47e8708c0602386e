"""The REST API's JSON parser."""

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from personalization.experiences.limits import PAYLOAD_MAX_DEPTH


class JSONParser(parsers.JSONParser):
    """DRF's, except that a body nested deeper than Python's parser can follow (about a thousand
    levels) is a 400 saying so, not a RecursionError and a 500. Shallower bodies are parsed and
    each field's own check names the field that is too deep."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(
                f"body: JSON is nested too deep to read; keep objects and lists at most {PAYLOAD_MAX_DEPTH} levels deep"
            ) from None
