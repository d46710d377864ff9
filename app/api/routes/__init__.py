# Routers carry their full path (no prefix added at include time) so that the route template
# FastAPI reports for metrics is the path clients call, e.g. /api/posts/{post_id}.
API_PREFIX = "/api"
