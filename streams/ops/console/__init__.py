"""The operator console (issue 17): server-rendered pages at `/console` on the worker's
web server, for customer-success operations staff.

* `journal.py`: what the runtime tells the console as it works, kept in bounded
  in-memory rings and indexes per worker (recent deliveries per user, dead letters this
  worker sent, users seen per group and CustomerSuccessBox account, counter samples for
  the rate chart). No I/O, no faust or aiohttp: the runtime imports it.
* `session.py`: the login (the admin token), the signed session cookie and CSRF tokens.
* `render.py`: HTML, escaped everywhere, and the SVG rate chart.
* `web.py`: the routes, registration on the Faust app (`install`), forwarding to the
  worker that owns a user, replay of dead letters.
* `static/`: the stylesheet and the little JavaScript, served by cs-relay itself.

The console is off (404) unless CS_RELAY_ADMIN_TOKEN is set. See docs/console.md.
"""
