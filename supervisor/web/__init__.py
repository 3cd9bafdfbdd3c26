"""`worker-supervisor web`: read-only pages of the record, served by a process of its own.

`app.py` the WSGI application (routes, headers), `pages.py` the HTML, `markup.py` escaping by construction,
`reading.py` what each page reads (as the operator's commands read it), `server.py` the bounded HTTP server,
`command.py` the command; `static/` the stylesheet and the script that shows times in the viewer's zone.
"""
