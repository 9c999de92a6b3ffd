"""Progress reporting for long stages: rich bars on a terminal, plain lines otherwise,
nothing but the final JSON document with --json, nothing at all with -q. Every line also
goes to the `adaexport.progress` logger at debug level (the CLI's --log-file keeps it)."""

from __future__ import annotations

import logging
import sys
import time

_log = logging.getLogger("adaexport.progress")


class PlainReporter:
    """One line per finished item, to stderr (stdout stays for results)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self._stage, self._total, self._done, self._started = "", 0, 0, 0.0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _emit(self, text: str) -> None:
        _log.debug(text)
        self._print(text)

    def stage(self, name: str, total: int) -> None:
        self._stage, self._total, self._done, self._started = name, total, 0, time.perf_counter()
        self._emit(f"[{name}] {total} item(s)")

    def advance(self, item: str, detail: str = "") -> None:
        self._done += 1
        self._emit(f"[{self._stage}] {self._done}/{self._total} {item}" + (f": {detail}" if detail else ""))

    def end_stage(self) -> None:
        self._emit(f"[{self._stage}] done in {time.perf_counter() - self._started:.1f}s")

    def info(self, text: str) -> None:
        self._emit(text)

    def warn(self, text: str) -> None:
        self._emit(f"warning: {text}")

    def close(self) -> None:
        pass


class QuietReporter(PlainReporter):
    """For --json: warnings still reach stderr, progress does not."""

    def _print(self, text: str) -> None:
        if text.startswith("warning:"):
            super()._print(text)


class SilentReporter(PlainReporter):
    """For -q: nothing at all (errors are the command's, not the reporter's)."""

    def _print(self, text: str) -> None:
        pass


class RichReporter(PlainReporter):
    """A progress bar per stage on a terminal."""

    def __init__(self, console):
        super().__init__(console.file)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        # item names (engine ids, from a manifest) are user text: never rich markup
        self.progress = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[item]}", markup=False), console=console)
        self.progress.start()
        self._task = None

    def stage(self, name: str, total: int) -> None:
        _log.debug("[%s] %d item(s)", name, total)
        self._task = self.progress.add_task(name, total=total, item="")

    def advance(self, item: str, detail: str = "") -> None:
        _log.debug("%s%s", item, f": {detail}" if detail else "")
        self.progress.update(self._task, advance=1, item=item)

    def end_stage(self) -> None:
        self.progress.update(self._task, item="done")

    def info(self, text: str) -> None:
        _log.debug(text)
        self.progress.console.print(text, markup=False, highlight=False)

    def warn(self, text: str) -> None:
        from rich.text import Text

        _log.debug("warning: %s", text)
        self.progress.console.print(Text.assemble(("warning:", "yellow"), " ", text), highlight=False)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(json_mode: bool, console, quiet: bool = False):
    if quiet:
        return SilentReporter()
    if json_mode:
        return QuietReporter()
    if console.is_terminal:
        return RichReporter(console)
    return PlainReporter()
