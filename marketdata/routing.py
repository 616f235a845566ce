# WebSocket routes (SPEC section 7); the stream consumers are added by the streaming work.
websocket_urlpatterns: list = []
