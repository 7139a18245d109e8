"""The operator console (issue 17): server-rendered pages at `/console` on the worker's
web server, for customer-success operations staff.

* `journal.py`: what the runtime tells the console as it works, kept in bounded
  in-memory rings and indexes per worker (recent deliveries per user, dead letters this
  worker sent, users seen per group and CustomerSuccessBox account, counter samples for
  the rate chart). No I/O, no faust or aiohttp: the runtime imports it.
* `session.py`: the login (the admin token, throttled per client), the signed session
  cookie and CSRF tokens.
* `deadletters.py`: the recent dead letters, read from the dead-letter topic.
* `html.py`: HTML pieces, escaped everywhere; `layout.py`: the frame of every page.
* `pages/`: a module per page, its HTML and its handler (search, user, group,
  destinations, dead letters, replay, login).
* `web.py`: the routes and their dispatch (session and CSRF checks), registration on
  the Faust app (`install`); `sources.py`: what the pages read; `responses.py`: the
  answers and their security headers.
* `static/`: the stylesheet and the little JavaScript, served by cs-relay itself.

The console is off (404) unless CS_RELAY_ADMIN_TOKEN is set. See docs/console.md.
"""
