"""Page sizes of the REST API (REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"]). Its own module: DRF imports
it while loading its generic views, so it must not import them back."""

from rest_framework import pagination


class BoundedPagination(pagination.LimitOffsetPagination):
    """`?limit=` (default 100) is clamped to 1–MAX_LIMIT and `?offset=` to 0–MAX_OFFSET, so no request
    can ask for everything at once or send PostgreSQL a number it cannot hold; a value that is not a
    whole number is ignored (the default applies)."""

    max_limit = 500
    MAX_OFFSET = 1_000_000_000

    def get_offset(self, request):
        return min(super().get_offset(request), self.MAX_OFFSET)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            bound = self.max_limit if parameter["name"] == self.limit_query_param else self.MAX_OFFSET
            parameter["schema"].update({"minimum": 0, "maximum": bound})
            parameter["description"] += f" (at most {bound}; larger values are clamped)"
        return parameters
