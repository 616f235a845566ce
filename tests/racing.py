"""Requests released at the same instant, as a bot's retry racing its original."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import connection


def race(call: Callable, arguments: list) -> list:
    """``call(argument)`` for each argument, each on its own thread, all released together by a
    barrier (each thread closes its own database connection); the results, in argument order."""
    barrier = threading.Barrier(len(arguments))

    def run(argument):
        barrier.wait()
        try:
            return call(argument)
        finally:
            connection.close()

    with ThreadPoolExecutor(len(arguments)) as pool:
        return list(pool.map(run, arguments))
