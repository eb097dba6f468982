"""The Linx proxy daemon (Twisted): route sync, token access, HTTP and WebSocket relay."""
