"""Example workers: `make run` supervises every module in this package.

Each module shows one way a periodic job behaves in real life; together they show that nothing one of them
does reaches the supervisor or its neighbours.
"""
