"""Projects, members, API keys, permissions and the audit trail; the dashboard's workspace helpers."""
