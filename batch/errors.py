"""`clfbatch`'s exit codes, and the one exception for problems the user can fix.

0 done; 1 some files failed and --fail-on-error was given; 2 bad input (unknown model or
version, missing or empty folder, report exists, bad labels file, another daemon on the same
output folder, a report written for other classes); 3 server unreachable, failing, or
refusing the client (token, TLS);
130 interrupted.
"""

from __future__ import annotations

EXIT_OK, EXIT_FILE_ERRORS, EXIT_USAGE, EXIT_SERVER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class BatchError(Exception):
    """A problem the user can fix: printed as one line, the process exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code
