"""Errors the supervisor reports to its user as one line, and the few that worker code must not catch."""
from __future__ import annotations


class SupervisorError(Exception):
    """Base of every error the command line turns into one line and an exit code."""

    exit_code = 1

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.message} ({self.where})" if self.where else self.message


class ConfigError(SupervisorError):
    """A setting in the config file, the environment or the command line is wrong."""

    exit_code = 2


class WorkerDefinitionError(SupervisorError):
    """A worker is declared with a bad name, interval or timeout; `where` names the worker."""

    exit_code = 2


class StoreUnavailable(SupervisorError):
    """The database cannot be reached or used; `where` is its URL without the password."""

    exit_code = 1


class HelperStartError(SupervisorError):
    """A helper process (spawner, recorder) cannot be started at all; `where` is the interpreter it runs."""

    exit_code = 1


class UnknownWorkerError(SupervisorError):
    """A command names a worker the database does not know; `where` is the database URL without the password."""

    exit_code = 1
