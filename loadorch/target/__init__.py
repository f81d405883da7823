"""The bundled sample target: a small social-feed HTTP service with a bounded capacity."""
