"""Template context for every dashboard page: the workspace set by `web.workspace_view`."""


def workspace(request) -> dict:
    current = getattr(request, "workspace", None)
    return {"workspace": current, "section": getattr(request, "section", "")}
