"""`lunglens pacs`: echo, find, get (C-GET or C-MOVE) and listen against DICOM nodes, and the node list."""

from __future__ import annotations

import argparse
import json
import sys

from app.cli.exits import EXIT_OK, fail


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pacs", help="talk to a PACS: echo, find, get, store, listen; configured nodes",
        description="DICOM networking with a PACS (DIMSE via pynetdicom). Name a node saved with `pacs nodes "
                    "add` (--node) or give --host, --port and --aet; nothing is sent anywhere else.")
    sub = p.add_subparsers(dest="pacs_command", metavar="ACTION", required=True)

    e = sub.add_parser("echo", help="C-ECHO: is the node there and does it accept us")
    _node_options(e)
    e.set_defaults(func=run_echo)

    f = sub.add_parser("find", help="C-FIND (or QIDO-RS with --url): studies matching the keys, or the series of "
                                    "one study")
    _node_options(f)
    f.add_argument("--url", help="a DICOMweb root (e.g. http://pacs:8042/dicom-web) instead of a DIMSE node")
    f.add_argument("--patient-id", default="")
    f.add_argument("--patient-name", default="", help="DICOM matching: '*' and '?' wildcards, e.g. 'DOE^*'")
    f.add_argument("--date", default="", help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    f.add_argument("--modality", default="", help="e.g. CT")
    f.add_argument("--accession", default="")
    f.add_argument("--series", metavar="STUDY_UID", help="list the series of this study instead")
    f.add_argument("--json", action="store_true", help="print a JSON list of objects keyed by DICOM keywords")
    f.set_defaults(func=run_find)

    g = sub.add_parser("get", help="retrieve a study or series into a folder (C-GET, C-MOVE with --move-dest, or "
                                   "WADO-RS with --url)")
    _node_options(g)
    g.add_argument("--url", help="a DICOMweb root (e.g. http://pacs:8042/dicom-web) instead of a DIMSE node")
    g.add_argument("--study", required=True, metavar="UID")
    g.add_argument("--series", metavar="UID")
    g.add_argument("--out", required=True, metavar="DIR", help="files land as DIR/<study>/<series>/<instance>.dcm")
    g.add_argument("--move-dest", metavar="AET",
                   help="C-MOVE to this AE title (LungLens's own, as the PACS knows it) instead of C-GET")
    g.add_argument("--listen-port", type=int, default=11113,
                   help="the port LungLens's storage SCP receives a C-MOVE on (default 11113)")
    g.set_defaults(func=run_get)

    st = sub.add_parser("store", help="C-STORE files (e.g. a lesion mask as DICOM SEG) to the node")
    _node_options(st)
    st.add_argument("files", nargs="+", metavar="FILE_OR_DIR")
    st.set_defaults(func=run_store)

    listen = sub.add_parser("listen", help="receive instances (C-STORE SCP) until Ctrl+C")
    listen.add_argument("--port", type=int, required=True)
    listen.add_argument("--out", required=True, metavar="DIR")
    listen.add_argument("--aet", default="LUNGLENS", help="the AE title to answer as (default LUNGLENS)")
    listen.add_argument("--host", default="", help="address to bind (default: all interfaces)")
    listen.set_defaults(func=run_listen)

    n = sub.add_parser("nodes", help="list, add or remove configured nodes")
    nsub = n.add_subparsers(dest="nodes_command", metavar="ACTION", required=True)
    nsub.add_parser("list", help="the configured nodes").set_defaults(func=run_nodes_list)
    add = nsub.add_parser("add", help="save a node under a name (replaces one of the same name)")
    add.add_argument("name")
    add.add_argument("--host", required=True)
    add.add_argument("--port", type=int, required=True)
    add.add_argument("--aet", required=True, help="the node's AE title")
    add.add_argument("--calling-aet", default="LUNGLENS", help="LungLens's AE title towards it (default LUNGLENS)")
    add.set_defaults(func=run_nodes_add)
    rm = nsub.add_parser("remove", help="forget a node")
    rm.add_argument("name")
    rm.set_defaults(func=run_nodes_remove)


def _node_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", help="a node saved with `lunglens pacs nodes add`")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--aet", help="the node's (called) AE title")
    p.add_argument("--calling-aet", default=None, help="LungLens's AE title (default LUNGLENS)")


def node_from(args: argparse.Namespace):
    """The node the user named: --node (configured) or --host/--port/--aet (given on this command line)."""
    from app.pacs.nodes import DEFAULT_CALLING_AET, PacsError, PacsNode, load_nodes

    if args.node:
        if args.host or args.port or args.aet:
            raise PacsError("give --node or --host/--port/--aet, not both")
        nodes = load_nodes()
        if args.node not in nodes:
            raise PacsError(f"no PACS node named {args.node!r}; configured: {', '.join(sorted(nodes)) or 'none'} "
                            "(`lunglens pacs nodes add`)")
        node = nodes[args.node]
        if args.calling_aet:
            node = PacsNode(node.host, node.port, node.aet, args.calling_aet, node.name)
        return node
    missing = [o for o, v in (("--host", args.host), ("--port", args.port), ("--aet", args.aet)) if not v]
    if missing:
        raise PacsError(f"name a node: --node NAME, or {', '.join(missing)}")
    return PacsNode(args.host, args.port, args.aet, args.calling_aet or DEFAULT_CALLING_AET)


def run_echo(args: argparse.Namespace) -> int:
    from app.pacs.query import echo

    node = node_from(args)
    seconds = echo(node)
    print(f"{node.describe()}: C-ECHO succeeded ({seconds * 1000:.0f} ms)")
    return EXIT_OK


def run_find(args: argparse.Namespace) -> int:
    from app.pacs import dicomweb
    from app.pacs.query import StudyQuery, find_series, find_studies

    node = None if args.url else node_from(args)
    if args.series:
        rows = dicomweb.find_series(args.url, args.series) if args.url else find_series(node, args.series)
        columns = ("SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances", "SeriesDescription",
                   "SeriesInstanceUID")
    else:
        query = StudyQuery(args.patient_id, args.patient_name, args.date, args.modality, args.accession)
        rows = dicomweb.find_studies(args.url, query) if args.url else find_studies(node, query)
        columns = ("PatientID", "PatientName", "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                   "StudyDescription", "StudyInstanceUID")
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print("no match", file=sys.stderr)
        return EXIT_OK
    print("\t".join(columns))
    for row in rows:
        print("\t".join("" if row.get(c) is None else str(row.get(c)) for c in columns))
    return EXIT_OK


def run_get(args: argparse.Namespace) -> int:
    from app.pacs.retrieve import get, move

    tty = sys.stderr.isatty()

    def progress(done: int, total: int | None) -> None:
        if tty:  # a counter in place on a terminal; nothing in a log file
            print(f"\r{done}/{total if total else '?'} instance(s)", end="", file=sys.stderr, flush=True)

    if args.url:
        from app.pacs import dicomweb

        try:
            files = dicomweb.get(args.url, args.out, args.study, args.series, progress=progress)
        finally:
            if tty:
                print(file=sys.stderr)
        print(f"{len(files)} instance(s) in {', '.join(sorted({str(p.parent) for p in files}))}")
        return EXIT_OK
    node = node_from(args)
    try:
        if args.move_dest:
            result = move(node, args.out, args.study, args.series, move_dest=args.move_dest,
                          listen_port=args.listen_port, progress=progress)
        else:
            result = get(node, args.out, args.study, args.series, progress=progress)
    finally:
        if tty:
            print(file=sys.stderr)
    folders = sorted({str(p.parent) for p in result.files})
    print(f"{len(result.files)} instance(s) in {', '.join(folders)}")
    if result.failed:
        return fail(f"{result.failed} instance(s) failed: {'; '.join(result.warnings[:3]) or 'see the PACS log'}")
    return EXIT_OK


def run_store(args: argparse.Namespace) -> int:
    from app.pacs.store import store

    node = node_from(args)
    count = store(node, args.files)
    print(f"stored {count} file(s) on {node.describe()}")
    return EXIT_OK


def run_listen(args: argparse.Namespace) -> int:
    import time

    from app.pacs.storage import StorageServer

    server = StorageServer(args.out, args.port, aet=args.aet, host=args.host,
                           on_file=lambda p: print(p, flush=True))
    server.start()
    print(f"listening as {args.aet} on port {args.port}; files go to {args.out}; Ctrl+C stops", file=sys.stderr)
    try:
        while True:
            time.sleep(0.5)
    finally:
        server.stop()


def run_nodes_list(args: argparse.Namespace) -> int:
    from app.pacs.nodes import load_nodes, nodes_path

    nodes = load_nodes()
    if not nodes:
        print(f"no PACS nodes configured ({nodes_path()}); add one with `lunglens pacs nodes add`",
              file=sys.stderr)
    for name, node in sorted(nodes.items()):
        print(f"{name}\t{node.aet}@{node.host}:{node.port}\tcalling AE {node.calling_aet}")
    return EXIT_OK


def run_nodes_add(args: argparse.Namespace) -> int:
    from app.pacs.nodes import PacsNode, save_node

    save_node(PacsNode(args.host, args.port, args.aet, args.calling_aet, args.name))
    print(f"saved {args.name}")
    return EXIT_OK


def run_nodes_remove(args: argparse.Namespace) -> int:
    from app.pacs.nodes import remove_node

    remove_node(args.name)
    print(f"removed {args.name}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """The chosen action (each action's parser sets its own `func`)."""
    return int(args.func(args))
