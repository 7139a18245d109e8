"""The console's pages, a module each: what the page shows (its HTML, escaped through
`streams.ops.console.html`) and the handler that answers for it. A handler takes the
`Console` (its sources, sessions and caches), the request and the session, after
`Console.handle` has checked the session (and the CSRF token of a POST)."""
