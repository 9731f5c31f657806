"""OpenAI-compatible HTTP server driving one simulated replica on a real-time clock.

`servesim serve` turns each HTTP request into a simulated request and streams its tokens
when the simulation emits them (see docs/serve.md). Nothing in the simulation imports this
package; FastAPI, uvicorn and prometheus-client are imported only here (the `serve` extra).
"""
