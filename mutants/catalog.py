"""The curated mutants: one safety guarantee broken each, and the tests that must notice.

Each mutant replaces one exact snippet of a file under `reconciler/` with another.
The snippet must occur exactly once in that file; when the code moves and it no
longer does, `make mutants` reports the mutant as "no longer applies" and fails: update
the snippet, never drop the mutant. A new guarantee comes with its mutant here, and
its row in docs/testing.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to the repository root
    original: str  # must occur exactly once in `file`
    replacement: str
    breaks: str  # the guarantee it breaks, one line
    tests: tuple[str, ...]  # pytest node ids expected to fail with it


_VERIFY = "tests/test_verification.py::"
_CANARY = "tests/test_canary.py::"
_DB = "tests/test_database_connections.py::"
_WATCH = "tests/test_watch.py::"
_LOCKS = "tests/test_concurrency.py::"
_CASE = "tests/test_planner.py::test_plan_matches_the_case"
# The fault campaign's seed that breaks one standby's binary during an upgrade (docs/safety.md).
_SEED_31 = "tests/test_campaign.py::test_the_invariants_hold_for_seed[31]"
_NODES = "tests/test_planner_nodes.py::"

MUTANTS: tuple[Mutant, ...] = (
    # --- the guarantees docs/testing.md has listed from the start -------------------------
    Mutant(
        name="verify-always-passes",
        file="reconciler/executor.py",
        original=(
            "        self.result.failures.extend(not_followed + problems)\n"
            "        self.only_moves_not_followed = bool(not_followed) and not problems\n"
            "        return not (not_followed or problems)\n"
        ),
        replacement="        return True\n",
        breaks="Apply verifies what it did",
        tests=(
            _VERIFY + "test_a_tune_answered_but_never_made_fails_naming_the_mount",
            _VERIFY + "test_a_reload_answered_but_never_made_fails_naming_what_still_runs",
            _VERIFY + "test_a_backend_that_dies_after_the_reload_fails_naming_the_mount",
        ),
    ),
    Mutant(
        name="verify-ignores-the-re-plan",
        file="reconciler/executor.py",
        original="            problems.append(self._not_converged(action, live))\n",
        replacement="            pass\n",
        breaks="Verification re-plans after the writes: what is still needed is a problem",
        tests=(
            _VERIFY + "test_a_tune_answered_but_never_made_fails_naming_the_mount",
            _VERIFY + "test_a_reload_answered_but_never_made_fails_naming_what_still_runs",
        ),
    ),
    Mutant(
        name="verify-probes-nothing",
        file="reconciler/executor.py",
        original="        for kind, path, namespace in touched_mounts(actions):\n",
        replacement="        for kind, path, namespace in touched_mounts([]):\n",
        breaks="Verification probes every touched mount",
        tests=(_VERIFY + "test_a_backend_that_dies_after_the_reload_fails_naming_the_mount",),
    ),
    Mutant(
        name="no-fingerprint-check-before-writing",
        file="reconciler/executor.py",
        original="    if fingerprint(live) != plan.fingerprint:\n        raise StaleState()\n",
        replacement="    if False:\n        raise StaleState()\n",
        breaks="A change between planning and the first write is refused before any write",
        tests=(
            _VERIFY
            + "test_a_change_between_planning_and_the_first_write_is_refused_before_writing",
        ),
    ),
    Mutant(
        name="max-destroy-never-exceeded",
        file="reconciler/plan.py",
        original="        if len(destructive) > self.max_destroy:\n",
        replacement="        if False:\n",
        breaks="At most max_destroy destructive actions, even with --allow-destroy",
        tests=(
            "tests/test_apply_builtin.py::"
            "test_more_destruction_than_max_destroy_is_refused_even_when_allowed",
            "tests/test_render.py::test_more_than_max_destroy_is_refused_with_the_reason",
            _CASE + "[more_than_max_destroy_refused_even_with_allow_destroy]",
        ),
    ),
    Mutant(
        name="deregister-in-use-allowed",
        file="reconciler/planner/_cleanup.py",
        original="        if users:\n            errors.append(\n",
        replacement="        if False:\n            errors.append(\n",
        breaks="A catalog entry still used by a mount is not deregistered",
        tests=(
            "tests/test_apply_plugins.py::test_deregistering_an_entry_in_use_is_refused",
            _CASE + "[deregister_in_use_by_managed_mount_is_an_error]",
            _CASE + "[deregister_in_use_by_unmanaged_mount_is_an_error]",
        ),
    ),
    Mutant(
        name="redact-replaces-nothing",
        file="reconciler/client/_redact.py",
        original="            text = text.replace(secret, REDACTED)\n",
        replacement="            text = text.replace(secret, secret)\n",
        breaks="The token and secrets never show",
        tests=(
            "tests/test_client.py::test_token_never_appears_in_debug_logs",
            "tests/test_client.py::test_token_never_appears_in_exception_messages",
            "tests/test_secrets.py::test_an_error_that_echoes_the_request_never_shows_a_secret",
        ),
    ),
    Mutant(
        name="connection-users-ignored-by-cleanup",
        file="reconciler/planner/_cleanup.py",
        # The call's arguments are left out of the snippet: they change more often.
        original="        users += _connection_users_after(",
        replacement="        users += [] and _connection_users_after(",
        breaks="A database entry still run by a connection is not deregistered",
        tests=(
            _DB + "test_deregistering_an_entry_an_undeclared_connection_uses_is_refused",
            _CASE + "[database_deregister_used_by_undeclared_connection_is_an_error]",
        ),
    ),
    Mutant(
        name="connection-pin-never-differs",
        file="reconciler/planner/_connections.py",
        original="    if current.plugin_version != pin:\n        return RepinAction(\n",
        replacement="    if False:\n        return RepinAction(\n",
        breaks="A connection whose pin differs is re-pinned",
        tests=(
            _DB + "test_upgrade_re_pins_the_connection_then_deregisters_the_old_version",
            _CASE + "[database_upgrade_repins_connections_then_deregisters]",
        ),
    ),
    Mutant(
        name="rollback-skips-connections",
        file="reconciler/executor.py",
        # Without its indentation: the call moves between blocks as the rollback changes.
        original="self._roll_back_connections()\n",
        replacement="None  # the connections are not rolled back\n",
        breaks="Rollback re-pins the connections already moved",
        tests=(_DB + "test_rollback_re_pins_the_connections_already_moved",),
    ),
    Mutant(
        name="connection-details-logged",
        file="reconciler/client/_client.py",
        original='        data = _data(answer)\n        details = data.get("connection_details")\n',
        replacement=(
            "        data = _data(answer)\n"
            '        log.debug("read connection %s: %s", name, data)\n'
            '        details = data.get("connection_details")\n'
        ),
        breaks="A connection's credentials never show",
        tests=(_DB + "test_upgrade_re_pins_the_connection_then_deregisters_the_old_version",),
    ),
    Mutant(
        name="tls-failure-retried",
        file="reconciler/client/_transport.py",
        original=(
            '                "(BAO_SKIP_VERIFY=true only for a throw-away test server)",\n'
            "                path=path,\n"
            "                retryable=False,\n"
        ),
        replacement=(
            '                "(BAO_SKIP_VERIFY=true only for a throw-away test server)",\n'
            "                path=path,\n"
            "                retryable=True,\n"
        ),
        breaks="A certificate problem is not retried",
        tests=("tests/test_tls.py::test_an_unknown_ca_is_refused_at_once_naming_bao_cacert",),
    ),
    Mutant(
        name="sealed-retried",
        file="reconciler/errors.py",
        original=(
            '    def __init__(self, message: str, *, status: int | None = 503, path: str = "") '
            "-> None:\n"
            "        super().__init__(message, status=status, path=path, retryable=False)\n"
        ),
        replacement=(
            '    def __init__(self, message: str, *, status: int | None = 503, path: str = "") '
            "-> None:\n"
            "        super().__init__(message, status=status, path=path, retryable=True)\n"
        ),
        breaks="A sealed server is not retried",
        tests=("tests/test_faults.py::test_a_sealed_server_is_reported_with_the_fix",),
    ),
    # --- the twelve that were unguarded -----------------------------------------------------
    Mutant(
        name="canary-failure-ignored",
        file="reconciler/executor.py",
        original="                failed = self._canary_fails(action)\n",
        replacement="                failed = None\n",
        breaks="A canary that does not run its new plugin stops the upgrade before the rest",
        tests=(
            _CANARY + "test_a_canary_that_does_not_take_its_new_plugin_stops_the_rest",
            _CANARY + "test_a_canary_left_without_a_backend_after_its_reload_stops_the_rest",
        ),
    ),
    Mutant(
        name="canary-reload-error-ignored",
        file="reconciler/executor.py",
        original=(
            "            except ApiError as error:\n"
            '                failure = f"{action.kind.value} {action.target}: {error}"\n'
        ),
        replacement=(
            "            except ApiError as error:\n"
            "                if isinstance(action, ReloadAction) and action.canary:\n"
            "                    continue\n"
            '                failure = f"{action.kind.value} {action.target}: {error}"\n'
        ),
        breaks="A canary whose reload fails stops the upgrade: the other mounts are not reloaded",
        tests=(_CANARY + "test_a_broken_binary_takes_down_only_the_canary_which_is_rolled_back",),
    ),
    Mutant(
        name="cleanup-after-failed-verification",
        file="reconciler/executor.py",
        original=(
            "                self._fail_and_maybe_roll_back(converge, before)\n            return\n"
        ),
        replacement="                self._fail_and_maybe_roll_back(converge, before)\n",
        breaks="The cleanup stage (deregistrations) runs only after verification passed",
        tests=(_VERIFY + "test_a_failed_verification_deregisters_nothing",),
    ),
    Mutant(
        name="env-not-redacted",
        file="reconciler/client/_client.py",
        original="        for value in env.values():\n            remember_secret(value)\n",
        replacement="        for value in env.values():\n            pass\n",
        breaks="A catalog entry's env values are secrets: never in a message or a log line",
        tests=("tests/test_redaction.py::test_env_values_sent_in_a_registration_are_redacted",),
    ),
    Mutant(
        name="connection-details-not-redacted",
        file="reconciler/client/_client.py",
        original="            if isinstance(value, str):\n                remember_secret(value)\n",
        replacement="            if isinstance(value, str):\n                pass\n",
        breaks="A connection's details read from the server are secrets: never shown",
        tests=("tests/test_redaction.py::test_connection_details_read_are_redacted",),
    ),
    Mutant(
        name="max-destroy-per-namespace",
        file="reconciler/plan.py",
        original="        if len(destructive) > self.max_destroy:\n",
        replacement=(
            "        per_namespace = __import__('collections').Counter(\n"
            "            getattr(self.actions[i].params, 'namespace', None) for i in destructive\n"
            "        )\n"
            "        if max(per_namespace.values()) > self.max_destroy:\n"
        ),
        breaks="max_destroy counts the destructive actions of the whole plan, every namespace",
        tests=("tests/test_plan_refusals.py::test_max_destroy_counts_every_namespace_together",),
    ),
    Mutant(
        name="watch-applies-mismatched-binaries",
        file="reconciler/watch/_runner.py",
        original="                check_plugin_files=self._options.check_plugin_files,\n",
        replacement="                check_plugin_files=False,\n",
        breaks="watch keeps the last good file when a plugin binary does not match its sha256",
        tests=(_WATCH + "test_a_binary_that_does_not_match_its_sha256_keeps_the_last_good_file",),
    ),
    Mutant(
        name="watch-takes-no-lock",
        file="reconciler/watch/_runner.py",
        original="        hooks = PassHooks(progress=self._progress(outcome), lock=self._locked)\n",
        replacement=(
            "        hooks = PassHooks(\n"
            "            progress=self._progress(outcome),\n"
            "            lock=lambda _identity: contextlib.nullcontext(),\n"
            "        )\n"
        ),
        breaks="A watch pass holds the per-server lock: it never writes beside a CLI apply",
        tests=(_WATCH + "test_a_pass_never_writes_while_an_apply_holds_the_lock",),
    ),
    Mutant(
        name="server-reference-registered",
        file="reconciler/planner/_catalog.py",
        original='        if entry.managed_by == "server":\n            continue',
        replacement=(
            '        if entry.managed_by == "server" and key in context.external:\n'
            "            continue"
        ),
        breaks="A managed_by: server entry is never written, even when the catalog lacks it",
        tests=(
            "tests/test_declarative_plans.py::"
            "test_a_reference_missing_from_the_catalog_is_never_registered",
        ),
    ),
    Mutant(
        name="repins-not-verified",
        file="reconciler/executor.py",
        original=(
            "            if isinstance(action, ReloadAction) and action.params.node:\n"
            "                continue  # a lagging standby"
        ),
        replacement=(
            "            if isinstance(action, RepinAction):\n"
            "                continue\n"
            "            if isinstance(action, ReloadAction) and action.params.node:\n"
            "                continue  # a lagging standby"
        ),
        breaks="A connection re-pin is verified: the connection is read back after apply",
        tests=(_DB + "test_a_re_pin_answered_but_never_made_fails_and_deregisters_nothing",),
    ),
    Mutant(
        name="connection-rollback-unchecked",
        file="reconciler/executor.py",
        original="            if reported == p.previous_version:\n",
        replacement="            if True:\n",
        breaks="The rollback of a connection re-pin is read back before it is reported done",
        tests=(_DB + "test_a_rollback_re_pin_that_did_not_take_is_reported_as_failed",),
    ),
    Mutant(
        name="export-drops-allowed-response-headers",
        file="reconciler/export.py",
        original="        if key not in CONFIG_DEFAULTS or value == CONFIG_DEFAULTS[key]:\n",
        replacement=(
            "        if key not in CONFIG_DEFAULTS or value == CONFIG_DEFAULTS[key] "
            'or key == "allowed_response_headers":\n'
        ),
        breaks="export writes every config key the schema knows: the file round-trips",
        tests=("tests/test_export.py::test_every_config_key_round_trips_through_export",),
    ),
    Mutant(
        name="watch-without-rollback",
        file="reconciler/watch/_runner.py",
        original="            rollback_on_failure=True,\n",
        replacement="            rollback_on_failure=False,\n",
        breaks="A watch pass rolls a failed upgrade back",
        tests=(_WATCH + "test_a_failed_upgrade_in_a_pass_is_rolled_back_on_the_server",),
    ),
    # --- more over the safety code -----------------------------------------------------------
    Mutant(
        name="cleanup-runs-with-converge",
        file="reconciler/executor.py",
        original=(
            "        converge = [a for a in actions if a.stage is Stage.CONVERGE]\n"
            "        cleanup = [a for a in actions if a.stage is Stage.CLEANUP]\n"
        ),
        replacement="        converge = list(actions)\n        cleanup: list[Action] = []\n",
        breaks="Deregistrations run after the converge stage was verified, never before",
        tests=(
            _VERIFY + "test_a_failed_verification_deregisters_nothing",
            "tests/test_apply_plugins.py::"
            "test_upgrade_with_absent_old_version_deregisters_after_verification",
            _DB + "test_upgrade_re_pins_the_connection_then_deregisters_the_old_version",
        ),
    ),
    Mutant(
        name="rollback-does-not-tune-back",
        file="reconciler/rollback.py",
        original="                client.tune_mount,\n",
        replacement="                lambda *_args: None,\n",
        breaks="Rollback pins a failed upgrade's mounts back to their old version",
        tests=(
            _CANARY + "test_a_broken_binary_takes_down_only_the_canary_which_is_rolled_back",
            "tests/test_apply_plugins.py::test_broken_binary_rolls_back_by_default",
        ),
    ),
    Mutant(
        name="rollback-does-not-reload",
        file="reconciler/rollback.py",
        original="                client.reload_backend,\n",
        replacement="                lambda **_kwargs: None,\n",
        breaks="Rollback reloads the mounts that were reloaded onto the failed version",
        tests=(
            _CANARY + "test_a_broken_binary_takes_down_only_the_canary_which_is_rolled_back",
            "tests/test_apply_plugins.py::test_broken_binary_rolls_back_by_default",
        ),
    ),
    Mutant(
        name="rollback-not-verified",
        file="reconciler/rollback.py",
        original="        wrong = _wrong(after[node.address][restore.key], restore.target)\n",
        replacement='        wrong = ""\n',
        breaks="A rollback is reported as done only when every node's reads show it",
        tests=(
            "tests/test_cluster_apply.py::"
            "test_a_mount_whose_old_binary_is_gone_from_one_node_is_reported_and_planned_again",
        ),
    ),
    Mutant(
        name="lost-reload-resent-to-every-mount",
        file="reconciler/executor.py",
        original=(
            "        rest = [path for path in action.params.mounts or [] "
            "if (namespace, path) in pending]\n"
        ),
        replacement="        rest = list(action.params.mounts or [])\n",
        breaks="A reload whose answer was lost is sent again only for the mounts still needing it",
        tests=("tests/test_reload_once.py::test_a_reload_whose_answer_is_lost_is_not_sent_again",),
    ),
    Mutant(
        name="send-once-retried",
        file="reconciler/client/_transport.py",
        original="                if send_once and error.retryable and _may_have_been_sent(exc):\n",
        replacement="                if False:\n",
        breaks="A reload that may have reached the server is never sent again blindly",
        tests=(
            "tests/test_client.py::test_a_reload_that_may_have_reached_the_server_is_not_sent_again",
            "tests/test_reload_once.py::test_a_reload_whose_answer_is_lost_is_not_sent_again",
        ),
    ),
    Mutant(
        name="canary-on-the-old-plugin-passes",
        file="reconciler/executor.py",
        original="            elif (namespace, path) in pending:\n",
        replacement="            elif False:\n",
        breaks="A canary that still runs the old plugin after its reload stops the upgrade",
        tests=(_CANARY + "test_a_canary_that_does_not_take_its_new_plugin_stops_the_rest",),
    ),
    Mutant(
        name="lock-shared-not-exclusive",
        file="reconciler/lock.py",
        original='    wanted.append((server.namespace.strip("/"), fcntl.LOCK_EX))\n',
        replacement='    wanted.append((server.namespace.strip("/"), fcntl.LOCK_SH))\n',
        breaks="One writer per server: the lock is exclusive",
        tests=(
            _LOCKS + "test_a_held_lock_fails_apply_at_once_naming_the_lock",
            _LOCKS + "test_two_spellings_of_the_address_share_one_lock",
        ),
    ),
    Mutant(
        name="lock-ignores-enclosing-namespaces",
        file="reconciler/lock.py",
        original=(
            "    wanted = [(name, fcntl.LOCK_SH) for name in _ancestors(server.namespace)]\n"
        ),
        replacement="    wanted = [(name, fcntl.LOCK_SH) for name in _ancestors('')]\n",
        breaks="An apply in a namespace excludes one of an enclosing namespace (the root's too)",
        tests=(_LOCKS + "test_the_lock_covers_the_namespace_tree_it_writes",),
    ),
    Mutant(
        name="lock-keyed-by-address",
        file="reconciler/lock.py",
        original="    key = server.cluster_id or server.address\n",
        replacement="    key = server.address\n",
        breaks="Two spellings of one server's address meet the same lock",
        tests=(_LOCKS + "test_two_spellings_of_the_address_share_one_lock",),
    ),
    Mutant(
        name="lock-timeout-not-waited",
        file="reconciler/lock.py",
        original="                    if time.monotonic() >= deadline:\n",
        replacement="                    if True:\n",
        breaks="--lock-timeout waits for the holder instead of failing at once",
        tests=(
            _LOCKS + "test_lock_timeout_waits_for_the_holder_to_finish",
            _LOCKS + "test_two_applies_with_lock_timeout_run_one_after_the_other",
        ),
    ),
    Mutant(
        name="log-records-not-redacted",
        file="reconciler/client/_redact.py",
        original="            record.msg, record.args = clean, None\n",
        replacement="            pass\n",
        breaks="HTTP library log records (DEBUG included) never show a secret",
        tests=(
            "tests/test_client.py::test_token_never_appears_in_debug_logs",
            "tests/test_secrets.py::test_debug_logs_in_process_never_show_a_secret",
        ),
    ),
    Mutant(
        name="token-not-remembered",
        file="reconciler/client/_client.py",
        original="        remember_secret(token)\n        self._flavour: Flavour | None = None\n",
        replacement="        self._flavour: Flavour | None = None\n",
        breaks="The token never shows in a message or a log line",
        tests=(
            "tests/test_client.py::test_token_never_appears_in_debug_logs",
            "tests/test_client.py::test_token_never_appears_in_exception_messages",
        ),
    ),
    Mutant(
        name="plan-errors-do-not-stop",
        file="reconciler/reconcile.py",
        original="    if the_plan.errors:\n        return _Decision((), (), Verdict.PLAN_ERRORS)\n",
        replacement="    if False:\n        return _Decision((), (), Verdict.PLAN_ERRORS)\n",
        breaks="A plan with errors writes nothing",
        tests=(
            "tests/test_apply_plugins.py::test_deregistering_an_entry_in_use_is_refused",
            _DB + "test_deregistering_an_entry_an_undeclared_connection_uses_is_refused",
        ),
    ),
    Mutant(
        name="refused-actions-skipped-silently",
        file="reconciler/reconcile.py",
        original="    if refused and not options.skip_refused:\n",
        replacement="    if False:\n",
        breaks="apply refuses the whole plan when it holds a refused destructive action",
        tests=(
            "tests/test_apply_builtin.py::"
            "test_prune_is_refused_without_allow_destroy_and_applied_with_it",
        ),
    ),
    Mutant(
        name="destroy-without-allow-destroy",
        file="reconciler/plan.py",
        original=(
            "        if not allow_destroy:\n"
            '            return dict.fromkeys(destructive, "destructive: needs --allow-destroy")\n'
        ),
        replacement=(
            "        if False:\n"
            '            return dict.fromkeys(destructive, "destructive: needs --allow-destroy")\n'
        ),
        breaks="A destructive action needs --allow-destroy",
        tests=(
            "tests/test_apply_builtin.py::"
            "test_prune_is_refused_without_allow_destroy_and_applied_with_it",
            _WATCH + "test_destructive_actions_are_skipped_and_counted",
        ),
    ),
    Mutant(
        name="disable-classified-safe",
        file="reconciler/plan.py",
        original='    ActionKind.DISABLE: KindRule("-", Safety.DESTRUCTIVE, _CLEANUP, 5),\n',
        replacement='    ActionKind.DISABLE: KindRule("-", Safety.SAFE, _CLEANUP, 5),\n',
        breaks="Disabling a mount (its data gone) is destructive",
        tests=(
            "tests/test_apply_builtin.py::"
            "test_prune_is_refused_without_allow_destroy_and_applied_with_it",
            _CASE + "[prune_mounts_disable_refused_without_allow_destroy]",
        ),
    ),
    Mutant(
        name="prune-without-prune-mounts",
        file="reconciler/planner/_mounts.py",
        original="    if not context.desired.settings.prune_mounts:\n",
        replacement="    if False:\n",
        breaks="Undeclared mounts are left alone unless prune_mounts is on",
        tests=(
            "tests/test_apply_builtin.py::test_removed_mount_without_prune_is_only_a_warning",
            _CASE + "[unmanaged_mounts_left_alone_without_prune]",
        ),
    ),
    Mutant(
        name="reserved-mount-declarable",
        file="reconciler/planner/_mounts.py",
        original="    if mount.path in RESERVED_PATHS[kind]:\n",
        replacement="    if False:\n",
        breaks="The server's own mounts (sys/, token/ …) cannot be declared",
        tests=(_CASE + "[reserved_paths_are_errors]",),
    ),
    Mutant(
        name="cleanup-ignores-other-namespaces",
        file="reconciler/planner/_cleanup.py",
        original="            for user in context.usage.using(key)\n",
        replacement="            for user in ()\n",
        breaks="An entry a mount of another namespace runs is not deregistered",
        tests=(
            "tests/test_namespaces.py::"
            "test_a_root_prune_never_deregisters_what_a_namespaced_mount_runs",
        ),
    ),
    Mutant(
        name="sha256-mismatch-accepted",
        file="reconciler/loader/_plugin_files.py",
        original="        elif entry.sha256 != digest:\n",
        replacement="        elif False:\n",
        breaks="A plugin binary that does not hash to its declared sha256 is a load error",
        tests=(
            "tests/test_saved_plans.py::test_a_changed_plugin_binary_is_named",
            _WATCH + "test_a_binary_that_does_not_match_its_sha256_keeps_the_last_good_file",
        ),
    ),
    Mutant(
        name="client-errors-retried",
        file="reconciler/errors.py",
        original="    return status in {412, 429} or (status >= 500 and status != 501)\n",
        replacement="    return status in {412, 429} or status >= 400\n",
        breaks="A client error (4xx but 412 and 429) is terminal: not retried",
        tests=("tests/test_faults.py::test_a_client_error_is_terminal_and_stops_the_apply",),
    ),
    Mutant(
        name="newest-version-is-the-oldest",
        file="reconciler/resolver.py",
        original="    return max(versions, key=version_order)\n",
        replacement="    return min(versions, key=version_order)\n",
        breaks="An unpinned mount resolves to the newest registered version, as the server does",
        tests=("tests/test_resolver.py",),
    ),
    Mutant(
        name="release-before-its-prereleases",
        file="reconciler/resolver.py",
        original="        return (core, (1,))\n",
        replacement="        return (core, (-1,))\n",
        breaks="A release sorts after its pre-releases (semantic-version precedence)",
        tests=("tests/test_resolver.py::test_versions_normalise_and_order_by_precedence",),
    ),
    Mutant(
        name="watch-forgets-the-last-good-file",
        file="reconciler/watch/_runner.py",
        original=(
            "            return self._keep_last_good(outcome, "
            "_describe_load_error(self.path, error))\n"
        ),
        replacement="            raise\n",
        breaks="watch keeps enforcing the last good file while an edit is invalid",
        tests=(_WATCH + "test_invalid_edit_keeps_the_last_good_state",),
    ),
    Mutant(
        name="watch-refuses-the-safe-rest",
        file="reconciler/watch/_runner.py",
        original="            skip_refused=True,\n",
        replacement="            skip_refused=False,\n",
        breaks="watch applies the safe rest of a plan and skips the refused destructive actions",
        tests=(_WATCH + "test_destructive_actions_are_skipped_and_counted",),
    ),
    Mutant(
        name="watch-retries-held-upgrades",
        file="reconciler/watch/_runner.py",
        original="            held=tuple(sorted(self._held)),\n",
        replacement="            held=(),\n",
        breaks="watch holds a failed upgrade until the file changes instead of retrying it",
        tests=(_WATCH + "test_failed_upgrade_is_held_until_the_file_changes", _SEED_31),
    ),
    Mutant(
        name="watch-never-retries-held-upgrades",
        file="reconciler/watch/_runner.py",
        original="            if loaded.sha256 != hold.file:\n",
        replacement="            if False:\n",
        breaks="An edit of the file releases the upgrades watch held after a failure",
        tests=(_WATCH + "test_failed_upgrade_is_held_until_the_file_changes",),
    ),
    Mutant(
        name="saved-plan-fingerprint-unchecked",
        file="reconciler/reconcile.py",
        original="    if again.fingerprint != saved.fingerprint:\n",
        replacement="    if False:\n",
        breaks="A saved plan made against another live state is refused as stale",
        tests=("tests/test_apply_builtin.py::test_stale_saved_plan_is_refused",),
    ),
    Mutant(
        name="enable-in-use-taken-as-done",
        file="reconciler/client/_transport.py",
        original="                if attempt > 1 and done_if is not None and done_if(error):\n",
        replacement="                if done_if is not None and done_if(error):\n",
        breaks="An enable on a path already in use fails; only a retry after a lost answer is done",
        tests=("tests/test_client.py::test_an_enable_on_a_path_already_in_use_is_an_error",),
    ),
    Mutant(
        name="file-size-unchecked-after-reading",
        file="reconciler/loader/_pipeline.py",
        original=(
            "    if len(data) > max_file_size:\n"
            "        raise too_big(name, len(data), max_file_size)\n"
            "    return _load(data, name, path, path.parent"
        ),
        replacement="    return _load(data, name, path, path.parent",
        breaks="A desired-state file is read no further than the size limit (a device too)",
        tests=(
            "tests/test_hostile_input.py::test_a_device_is_read_no_further_than_the_size_limit",
        ),
    ),
    Mutant(
        name="fingerprint-ignores-mounts",
        file="reconciler/plan.py",
        original="                for m in live.mounts\n",
        replacement="                for m in live.mounts[:0]\n",
        breaks="The live state's fingerprint covers every mount, so a change to one is noticed",
        tests=(
            _VERIFY
            + "test_a_change_between_planning_and_the_first_write_is_refused_before_writing",
            "tests/test_apply_builtin.py::test_stale_saved_plan_is_refused",
        ),
    ),
    Mutant(
        name="apply-without-confirmation",
        file="reconciler/reconcile.py",
        original=(
            "        if hooks.confirm is not None and "
            "not hooks.confirm(the_plan, identity.address):\n"
        ),
        replacement="        if False:\n",
        breaks="apply writes nothing that was not confirmed (--yes, or an answer at the prompt)",
        tests=("tests/test_apply_builtin.py::test_apply_needs_yes_without_a_terminal",),
    ),
    Mutant(
        name="watch-stops-only-after-the-pass",
        file="reconciler/watch/_runner.py",
        original='            if event.status == "start" and self._stopping():\n',
        replacement="            if False:\n",
        breaks="A stop request ends a watch pass between two actions, never inside one",
        tests=(_WATCH + "test_sighup_forces_a_pass_and_sigterm_stops_between_actions",),
    ),
    Mutant(
        name="httpcore-logs-unfiltered",
        file="reconciler/client/_redact.py",
        original='    for name in {"httpx", "httpcore", *names}:\n',
        replacement='    for name in {"httpx"}:\n',
        breaks="Every HTTP library logger is filtered, httpcore's included",
        tests=(
            "tests/test_client.py::test_token_never_appears_in_debug_logs",
            "tests/test_secrets.py::test_debug_logs_in_process_never_show_a_secret",
        ),
    ),
    Mutant(
        name="url-encoded-secrets-shown",
        file="reconciler/client/_redact.py",
        original='        quote(value, safe=""),\n        quote_plus(value),\n',
        replacement="",
        breaks="A secret echoed URL-encoded (in a query or a path) is redacted too",
        tests=("tests/test_redaction.py::test_a_secret_echoed_encoded_is_redacted",),
    ),
    Mutant(
        name="missing-plugin-file-retried",
        file="reconciler/client/_transport.py",
        original="        if status >= 500 and _COMMAND_PATH in detail:\n",
        replacement="        if False:\n",
        breaks="A plugin file gone from the node is named by plan and status, never retried",
        tests=(
            "tests/test_dead_mounts.py::"
            "test_a_plugin_file_gone_from_the_server_is_named_not_retried_and_flagged",
        ),
    ),
    Mutant(
        name="missing-plugin-file-not-flagged",
        file="reconciler/nodestate.py",
        original="    if seen.catalog_error.startswith(FILE_MISSING):\n",
        replacement="    if False:\n",
        breaks="status flags a mount whose plugin file its node lacks (its next reload fails)",
        tests=(
            "tests/test_dead_mounts.py::"
            "test_a_plugin_file_gone_from_the_server_is_named_not_retried_and_flagged",
        ),
    ),
    Mutant(
        name="canary-without-a-verdict-passes",
        file="reconciler/executor.py",
        original=(
            "            elif mount.backend_answers is None and (why := self._no_answer(mount)):\n"
        ),
        replacement="            elif False:\n",
        breaks="A canary the read could not judge (a 500) is probed before the rest moves",
        tests=(_CANARY + "test_a_canary_whose_plugin_dies_after_its_reload_stops_the_rest",),
    ),
    Mutant(
        name="bound-file-upgrades-not-rolled-back",
        file="reconciler/executor.py",
        original=(
            "        if self.desired.namespace is None:\n"
            "            return list(self.desired.plugins)\n"
        ),
        replacement="        if True:\n            return list(self.desired.plugins)\n",
        breaks="A failed upgrade of a file bound to a namespace is rolled back like any other",
        tests=(
            "tests/test_policy.py::"
            "test_a_token_with_only_the_policy_upgrades_rolls_back_watches_and_reads[team]",
        ),
    ),
    Mutant(
        name="cluster-nodes-not-verified",
        file="reconciler/executor.py",
        original=(
            "        nodes = self.nodes()\n"
            "        if len(nodes) < 2:\n"
            "            return []\n"
            "        sha = live.external_sha256()\n"
        ),
        replacement="        return []\n",
        breaks="Every node of a cluster is verified before an apply claims it converged",
        tests=(_SEED_31,),
    ),
    Mutant(
        name="cluster-upgrade-not-rolled-back",
        file="reconciler/executor.py",
        original="        outcomes = roll_back(\n",
        replacement="        outcomes = [] or (lambda *_args: [])(\n",
        breaks="A failed upgrade on a cluster leaves every mount answering on every node",
        tests=(_SEED_31,),
    ),
    Mutant(
        name="rollback-of-the-client-namespace-only",
        file="reconciler/rollback.py",
        original="        for m in (*before.mounts, *before.elsewhere)\n",
        replacement="        for m in before.mounts\n",
        breaks="A rollback restores the mounts of every namespace, each in its own",
        tests=(
            "tests/test_rollback.py::"
            "test_a_child_namespace_mount_pinned_ahead_is_tuned_back_in_its_namespace",
        ),
    ),
    Mutant(
        name="canary-per-namespace",
        file="reconciler/planner/_mounts.py",
        original="                and (p.namespace, api_path(p.kind, p.path)) not in canaries\n",
        replacement=(
            "                and p.namespace in {n for n, _ in canaries}\n"
            "                and (p.namespace, api_path(p.kind, p.path)) not in canaries\n"
        ),
        breaks="Every pin move of the plan, in any namespace, waits for the canaries",
        tests=(
            _NODES + "test_one_mount_per_namespace_onto_a_new_binary_still_gets_a_canary",
            _NODES + "test_the_child_namespace_pin_waits_for_the_root_canary",
        ),
    ),
    Mutant(
        name="node-drift-ignores-dead-mounts",
        file="reconciler/planner/_nodes.py",
        original="            if running.answers is False:\n",
        replacement="            if False:\n",
        breaks="A mount that does not answer on one node is reloaded on that node",
        tests=(_NODES + "test_a_child_namespace_mount_dead_on_one_node_is_reloaded_there_only",),
    ),
    Mutant(
        name="stale-move-not-an-error",
        file="reconciler/planner/_nodes.py",
        original="        if mount.namespace != context.namespace:\n            continue\n",
        replacement="        continue\n",
        breaks="A move a node's table did not follow is an error naming the node and the fix",
        tests=(
            _NODES + "test_a_move_a_standby_did_not_follow_is_an_error_naming_the_node_and_the_fix",
            "tests/test_campaign.py::test_the_invariants_hold_for_seed[9]",
        ),
    ),
    Mutant(
        name="move-not-followed-rolls-back-upgrades",
        file="reconciler/executor.py",
        original="            if self.only_moves_not_followed:\n",
        replacement="            if False:\n",
        breaks="A move standbys did not follow does not roll back an upgrade that worked",
        tests=(
            "tests/test_cluster_apply.py::"
            "test_a_move_beside_an_upgrade_keeps_the_upgrade_and_names_the_standbys_to_unseal",
        ),
    ),
)
