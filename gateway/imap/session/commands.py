"""Which command may run in which state, and who answers it: the one table.

Every command and extension gets its row here: the command's event type (from
`gateway.imap.protocol`), the states it is valid in, and its handler (a function of the
connection's `ImapState` and the command). `CAPABILITIES` is what every state
advertises; `connection.ImapState.capabilities` adds the per-state ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gateway.imap import protocol
from gateway.imap.session import any_state, authenticated, not_authenticated, quota, selected
from gateway.imap.session.reply import Reply, State

if TYPE_CHECKING:
    from gateway.imap.session.connection import ImapState

CAPABILITIES = (
    "IMAP4rev1",
    "LITERAL+",
    "SASL-IR",
    "ID",
    "ENABLE",
    "IDLE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "NAMESPACE",
    "SPECIAL-USE",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "ESEARCH",
    "BINARY",
    "QUOTA",
    "QUOTA=RES-STORAGE",
    "QUOTA=RES-MESSAGE",
    "CONDSTORE",
    "QRESYNC",
)

_ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})

Handler = Callable[["ImapState", Any], Reply]

COMMANDS: Mapping[type[protocol.Command], tuple[frozenset[State], Handler]] = {
    protocol.Capability: (_ANY, any_state.do_capability),
    protocol.Noop: (_ANY, any_state.do_noop),
    protocol.Logout: (_ANY, any_state.do_logout),
    protocol.Id: (_ANY, any_state.do_id),
    protocol.StartTls: (_NOT_AUTH, not_authenticated.do_starttls),
    protocol.Login: (_NOT_AUTH, not_authenticated.do_login),
    protocol.Authenticate: (_NOT_AUTH, not_authenticated.do_authenticate),
    protocol.Enable: (frozenset({State.AUTHENTICATED}), authenticated.do_enable),
    protocol.Namespace: (_AUTH, authenticated.do_namespace),
    protocol.Idle: (_AUTH, any_state.do_idle),
    protocol.Select: (_AUTH, authenticated.do_select),
    protocol.Examine: (_AUTH, authenticated.do_select),
    protocol.List: (_AUTH, authenticated.do_list),
    protocol.ListExtended: (_AUTH, authenticated.do_list_extended),
    protocol.Lsub: (_AUTH, authenticated.do_list),
    protocol.StatusCommand: (_AUTH, authenticated.do_status),
    protocol.Subscribe: (_AUTH, authenticated.do_subscribe),
    protocol.Unsubscribe: (_AUTH, authenticated.do_unsubscribe),
    protocol.Create: (_AUTH, authenticated.do_create),
    protocol.Delete: (_AUTH, authenticated.do_delete),
    protocol.Rename: (_AUTH, authenticated.do_rename),
    protocol.Append: (_AUTH, authenticated.do_append),
    protocol.GetQuota: (_AUTH, quota.do_getquota),
    protocol.GetQuotaRoot: (_AUTH, quota.do_getquotaroot),
    protocol.SetQuota: (_AUTH, quota.do_setquota),
    protocol.Check: (_SELECTED, selected.do_check),
    protocol.Close: (_SELECTED, selected.do_close),
    protocol.Unselect: (_SELECTED, selected.do_unselect),
    protocol.Expunge: (_SELECTED, selected.do_expunge),
    protocol.Search: (_SELECTED, selected.do_search),
    protocol.Fetch: (_SELECTED, selected.do_fetch),
    protocol.Store: (_SELECTED, selected.do_store),
    protocol.Copy: (_SELECTED, selected.do_copy),
    protocol.Move: (_SELECTED, selected.do_move),
}
