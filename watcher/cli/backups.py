"""``backup``, ``backups``, ``restore`` and ``cleanup`` (``watcher/backup/``, ``restore.py``,
``cleanup.py``)."""

from __future__ import annotations

import argparse
import sys

from watcher import config
from watcher.cli.exits import EXIT_FAILED, EXIT_OK
from watcher.metrics import Metrics


def _component(text: str) -> str:
    from watcher.backup import COMPONENTS

    if text not in COMPONENTS:
        raise argparse.ArgumentTypeError(f"unknown component {text!r} (one of "
                                         f"{', '.join(COMPONENTS)})")
    return text


def cmd_backup(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import backup, restore

    try:
        if args.verify:
            set_id, problems = restore.verify_set(settings, args.verify, args.components)
            for name, found in problems.items():
                print(f"{backup.archive_name(name, set_id)}: {'FAILED' if found else 'OK'}")
                print("".join(f"  {problem}\n" for problem in found), end="")
            return EXIT_FAILED if any(problems.values()) else EXIT_OK
        report = backup.run_backup(settings, Metrics(), args.components)
    except (LookupError, backup.BackupBusy) as exc:
        print(f"thumbgen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for archive in report.archives:
        print(f"{archive.archive}  {archive.files} file(s)  {archive.size} bytes"
              f"  {archive.skipped} left out")
    for name, why in report.failed.items():
        print(f"{name}: FAILED: {why}", file=sys.stderr)
    return EXIT_FAILED if report.failed else EXIT_OK


def cmd_backups(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import backup

    sets = backup.list_sets(settings.backup_path)
    print(f"{'ID':<16} {'SIZE':>10}  {'STATE':<10} {'VERIFIED':<9} COMPONENT=BYTES")
    for found in sets:
        states = [a.verified for a in found.archives.values()]
        verified = ("FAILED" if "failed" in states else "yes" if all(states) else
                    f"{states.count('ok')}/{len(states)}" if any(states) else "no")
        parts = [f"{n}={a.size}" + ("" if a.complete else "(incomplete)")
                 for n, a in found.archives.items()]
        print(f"{found.set_id:<16} {found.size:>10}  "
              f"{'complete' if found.complete else 'partial':<10} {verified:<9} {' '.join(parts)}")
    print(f"{len(sets)} backup set(s) in {settings.backup_path}")
    return EXIT_OK


def cmd_restore(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import restore

    try:
        set_id, reports = restore.restore_set(settings, args.id, args.components,
                                              to=args.to.resolve() if args.to else None,
                                              force=args.force)
    except LookupError as exc:
        print(f"thumbgen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for name, report in reports.items():
        print(f"{name} ({set_id}): {len(report.restored)} restored, {len(report.unchanged)} "
              f"already there, {len(report.refused)} refused")
        print("".join(f"  refused {path}: {why}\n" for path, why in report.refused), end="")
    return EXIT_FAILED if any(r.refused for r in reports.values()) else EXIT_OK


def cmd_cleanup(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import cleanup

    removals = cleanup.run(settings, Metrics(), dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for removal in removals:
        print(f"{verb} {removal.kind:<9} {removal.age / 86400:7.1f} d  {removal.path}")
    print(f"{len(removals)} file(s) {'would be removed' if args.dry_run else 'removed'}")
    return EXIT_OK
