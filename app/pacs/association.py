"""Opening an association with a configured node, with failures turned into messages a user can act on."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from app.pacs.nodes import PacsError, PacsNode

#: seconds to wait for the TCP connection, the association's answer, and each DIMSE reply
CONNECT_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 60.0

# pynetdicom logs every PDU at INFO/DEBUG; the user sees our messages instead
logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def new_ae(calling_aet: str) -> AE:
    ae = AE(ae_title=calling_aet)
    ae.connection_timeout = CONNECT_TIMEOUT_S
    ae.acse_timeout = CONNECT_TIMEOUT_S
    ae.network_timeout = REPLY_TIMEOUT_S
    ae.dimse_timeout = REPLY_TIMEOUT_S
    return ae


def _reachable(node: PacsNode) -> None:
    """A plain TCP connect first: pynetdicom reports a refused or unknown host only as 'association failed'."""
    try:
        with socket.create_connection((node.host, int(node.port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except socket.gaierror:
        raise PacsError(f"{node.describe()}: unknown host {node.host!r}") from None
    except TimeoutError:
        raise PacsError(f"{node.describe()}: no answer within {CONNECT_TIMEOUT_S:.0f} s (host down or "
                        "port filtered?)") from None
    except OSError as exc:
        raise PacsError(f"{node.describe()}: cannot connect ({exc.strerror or exc}); is the PACS running and "
                        "the port right?") from None


@contextmanager
def associate(node: PacsNode, contexts: Sequence[PresentationContext], *, what: str,
              ext_neg: list | None = None, handlers: list | None = None,
              configure: Callable[[AE], None] | None = None) -> Iterator[Association]:
    """An established association with `node` offering `contexts`, released on exit.

    Raises:
        PacsError: the node cannot be reached, rejects or aborts the association, or accepts none of the
            contexts `what` needs.
    """
    _reachable(node)
    ae = new_ae(node.calling_aet)
    ae.requested_contexts = list(contexts)
    if configure is not None:
        configure(ae)
    assoc = ae.associate(node.host, int(node.port), ae_title=node.aet, ext_neg=ext_neg, evt_handlers=handlers)
    if assoc.is_rejected:
        raise PacsError(f"{node.describe()} rejected the association from {node.calling_aet!r}"
                        f"{_rejection(assoc)}; check the called AE title {node.aet!r} and that the node knows "
                        f"LungLens's AE title {node.calling_aet!r}")
    if assoc.is_aborted or not assoc.is_established:
        raise PacsError(f"{node.describe()}: the association was aborted or timed out; check the called AE title "
                        f"{node.aet!r} and that the node knows LungLens's AE title {node.calling_aet!r}")
    try:
        if not assoc.accepted_contexts:
            raise PacsError(f"{node.describe()} accepts none of the contexts {what} needs")
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def _rejection(assoc: Association) -> str:
    rj = getattr(assoc.acceptor, "primitive", None)
    reason = getattr(rj, "reason_str", "") if rj is not None else ""
    return f" ({reason})" if reason else ""


def check_status(node: PacsNode, what: str, status) -> int:
    """The status value of a DIMSE reply; PacsError for none (timeout or abort)."""
    if status is None or "Status" not in status:
        raise PacsError(f"{node.describe()}: no reply to {what} within {REPLY_TIMEOUT_S:.0f} s, or the "
                        "association was aborted")
    return int(status.Status)
