"""The HTTP API: the Starlette app and its handlers, the declared body schemas (validation
and OpenAPI), the door (Host, Origin, Content-Type, token), and the API token.
"""
