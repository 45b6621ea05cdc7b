"""The admin API (token-guarded), its schemas, the OpenAPI document and the dashboard figures."""
