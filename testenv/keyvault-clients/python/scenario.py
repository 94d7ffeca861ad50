"""The official Python Key Vault secrets client (azure-keyvault-secrets) against the
project's Key Vault emulator: one scripted scenario, the same as the Go one
(../go/main.go) and the Rust one (tests/keyvault_clients.rs).

Environment: VAULTSYNC_TEST_EMULATOR_URL (https base URL of one emulator vault) and
VAULTSYNC_TEST_CA_FILE (PEM CA the emulator's certificate chains to).

Each step asserts; the first failure names its step and exits 1. Secret values are never
printed: they are random and only compared.
"""

import os
import secrets
import sys
import time
from datetime import datetime, timezone

from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

API_VERSION = "2025-07-01"
# Any non-empty bearer token is accepted by the emulator; a far-future expiry means the
# client never asks again during the run.
FAKE_TOKEN = "vaultsync-keyvault-clients-fake-token"
FAR_FUTURE = int(datetime(2099, 1, 1, tzinfo=timezone.utc).timestamp())
# What the standard challenge (resource="https://vault.azure.net") must make the client ask for.
EXPECTED_SCOPE = "https://vault.azure.net/.default"
# Our own secrets in the list: the scenario's plus the fillers. With a page size of 2
# the list walks at least two pages, whatever else the vault holds.
FILLERS = 2
PAGE_SIZE = 2
POLL_TIMEOUT_S = 60
TAGS = {"scenario": "keyvault-clients", "client": "python"}
CONTENT_TYPE = "text/plain"


class StepFailed(Exception):
    pass


class StaticCredential:
    """A TokenCredential that hands out one fixed fake token and records the scopes asked for."""

    def __init__(self):
        self.scopes = set()

    def get_token(self, *scopes, claims=None, tenant_id=None, enable_cae=False, **kwargs):
        self.scopes.update(scopes)
        return AccessToken(FAKE_TOKEN, FAR_FUTURE)


class Scenario:
    def __init__(self, client, credential, name):
        self.client = client
        self.credential = credential
        self.name = name
        self.fillers = [f"{name}-f{i:02d}" for i in range(FILLERS)]
        self.step = "start"
        self.to_clean = []  # names that may still exist, for the best-effort clean-up

    def check(self, condition, message):
        if not condition:
            raise StepFailed(message)

    def run_step(self, step, fn):
        self.step = step
        fn()
        print(f"python scenario: ok   {step}", flush=True)

    def http_error(self, fn, what):
        """Runs fn, which must fail with an HTTP error; returns the SDK's exception."""
        try:
            fn()
        except HttpResponseError as e:
            return e
        raise StepFailed(f"{what} succeeded, expected an HTTP error")

    def wait_poller(self, poller, what):
        poller.wait(timeout=POLL_TIMEOUT_S)
        self.check(poller.done(), f"{what}: the SDK's poller did not finish within {POLL_TIMEOUT_S}s")

    def run(self):
        value1 = "first-" + secrets.token_urlsafe(16)
        value2 = "second-" + secrets.token_urlsafe(16)
        state = {}

        def set_first():
            self.to_clean.append(self.name)
            s = self.client.set_secret(self.name, value1, tags=TAGS, content_type=CONTENT_TYPE)
            self.check(s.name == self.name, f"set returned name {s.name!r}")
            self.check(is_version(s.properties.version), f"set returned version {s.properties.version!r}")
            self.check(s.value == value1, "set did not echo the value it was given")
            self.check(s.properties.tags == TAGS, f"set returned tags {s.properties.tags!r}")
            self.check(s.properties.content_type == CONTENT_TYPE, f"set returned contentType {s.properties.content_type!r}")
            self.check(s.properties.enabled is True, f"set returned enabled={s.properties.enabled!r}")
            state["v1"] = s.properties.version

        def set_second():
            s = self.client.set_secret(self.name, value2, tags=TAGS, content_type=CONTENT_TYPE)
            self.check(is_version(s.properties.version), f"set returned version {s.properties.version!r}")
            self.check(s.properties.version != state["v1"], "the second set returned the first version")
            self.check(s.value == value2, "set did not echo the value it was given")
            state["v2"] = s.properties.version

        def get_latest():
            s = self.client.get_secret(self.name)
            self.check(s.properties.version == state["v2"], f"latest is version {s.properties.version!r}, not the second")
            self.check(s.value == value2, "latest value is not the second value")
            self.check(s.properties.tags == TAGS, f"tags {s.properties.tags!r}")
            self.check(s.properties.content_type == CONTENT_TYPE, f"contentType {s.properties.content_type!r}")

        def get_first_version():
            s = self.client.get_secret(self.name, state["v1"])
            self.check(s.properties.version == state["v1"], f"got version {s.properties.version!r}")
            self.check(s.value == value1, "the first version's value is not the first value")

        def list_versions():
            pages = 0
            versions = set()
            for page in self.client.list_properties_of_secret_versions(self.name, max_page_size=1).by_page():
                pages += 1
                for p in page:
                    versions.add(p.version)
            self.check({state["v1"], state["v2"]} <= versions, f"versions listed: {sorted(versions)}")
            self.check(pages >= 2, f"{pages} page(s) with max_page_size=1 and two versions")

        def set_fillers():
            self.to_clean.extend(self.fillers)
            for f in self.fillers:
                s = self.client.set_secret(f, "filler-" + secrets.token_urlsafe(8))
                self.check(s.name == f, f"set returned name {s.name!r}")

        def list_secrets():
            pages = 0
            found = {}
            for page in self.client.list_properties_of_secrets(max_page_size=PAGE_SIZE).by_page():
                pages += 1
                for p in page:
                    found[p.name] = p
            missing = [n for n in [self.name] + self.fillers if n not in found]
            self.check(not missing, f"not listed: {missing}")
            self.check(pages >= 2, f"only {pages} page(s) walked with max_page_size={PAGE_SIZE}")
            ours = found[self.name]
            self.check(ours.version is None, f"the list item carries version {ours.version!r}")
            self.check(ours.tags == TAGS, f"listed tags {ours.tags!r}")
            self.check(ours.content_type == CONTENT_TYPE, f"listed contentType {ours.content_type!r}")
            print(f"python scenario:      walked {pages} pages, {len(found)} secrets", flush=True)

        def delete_fillers():
            pollers = [(f, self.client.begin_delete_secret(f)) for f in self.fillers]
            for f, poller in pollers:
                self.wait_poller(poller, f"delete {f}")
                self.client.purge_deleted_secret(f)
                self.to_clean.remove(f)

        def disable_latest():
            p = self.client.update_secret_properties(self.name, state["v2"], enabled=False)
            self.check(p.enabled is False, f"update returned enabled={p.enabled!r}")
            self.check(p.version == state["v2"], f"update returned version {p.version!r}")
            self.check(p.tags == TAGS, f"update dropped the tags: {p.tags!r}")

        def get_disabled():
            e = self.http_error(lambda: self.client.get_secret(self.name), "get of a disabled secret")
            self.check(e.status_code == 403, f"status {e.status_code}, expected 403")
            code = e.error.code if e.error else None
            self.check(code == "Forbidden", f"error code {code!r}, expected 'Forbidden'")
            inner = getattr(getattr(getattr(e.model, "error", None), "inner_error", None), "code", None)
            self.check(inner == "SecretDisabled", f"innererror code {inner!r}, expected 'SecretDisabled'")

        # Key Vault keeps a disabled version disabled through delete and recover (a deleted
        # disabled secret even answers 403 SecretDisabled on GET /deletedsecrets), so the
        # version is enabled again before the delete/recover part.
        def enable_latest():
            p = self.client.update_secret_properties(self.name, state["v2"], enabled=True)
            self.check(p.enabled is True, f"update returned enabled={p.enabled!r}")

        def delete():
            poller = self.client.begin_delete_secret(self.name)
            d = poller.result()
            self.check(d.name == self.name, f"delete returned name {d.name!r}")
            self.check(bool(d.recovery_id), "delete returned no recoveryId (soft delete off?)")
            self.check(d.deleted_date is not None and d.scheduled_purge_date is not None, "delete returned no deletedDate/scheduledPurgeDate")
            self.wait_poller(poller, "delete")

        def get_deleted():
            d = self.client.get_deleted_secret(self.name)
            self.check(d.name == self.name, f"name {d.name!r}")
            self.check(bool(d.recovery_id), "no recoveryId")
            self.check(d.properties.tags == TAGS, f"tags {d.properties.tags!r}")

        def recover():
            poller = self.client.begin_recover_deleted_secret(self.name)
            p = poller.result()
            self.check(p.name == self.name, f"recover returned name {p.name!r}")
            self.wait_poller(poller, "recover")

        def get_after_recover():
            s = self.client.get_secret(self.name)
            self.check(s.properties.version == state["v2"], f"latest is version {s.properties.version!r}, not the second")
            self.check(s.value == value2, "latest value is not the second value")
            s = self.client.get_secret(self.name, state["v1"])
            self.check(s.value == value1, "the first version's value is not the first value")

        def delete_again():
            self.wait_poller(self.client.begin_delete_secret(self.name), "delete")

        def purge():
            self.client.purge_deleted_secret(self.name)
            self.to_clean.remove(self.name)
            deadline = time.monotonic() + POLL_TIMEOUT_S
            while True:
                try:
                    self.client.get_deleted_secret(self.name)
                except ResourceNotFoundError:
                    return
                self.check(time.monotonic() < deadline, f"still in deleted secrets {POLL_TIMEOUT_S}s after the purge")
                time.sleep(1)

        def token_scope():
            self.check(self.credential.scopes == {EXPECTED_SCOPE}, f"the client asked for scopes {sorted(self.credential.scopes)}")

        for step, fn in [
            ("set-first", set_first),
            ("set-second", set_second),
            ("get-latest", get_latest),
            ("get-first-version", get_first_version),
            ("list-versions", list_versions),
            ("set-fillers", set_fillers),
            ("list-secrets", list_secrets),
            ("delete-fillers", delete_fillers),
            ("disable-latest", disable_latest),
            ("get-disabled", get_disabled),
            ("enable-latest", enable_latest),
            ("delete", delete),
            ("get-deleted", get_deleted),
            ("recover", recover),
            ("get-after-recover", get_after_recover),
            ("delete-again", delete_again),
            ("purge", purge),
            ("token-scope", token_scope),
        ]:
            self.run_step(step, fn)

    def clean_up(self):
        """Best effort after a failure: delete and purge whatever this run may have left."""
        for name in list(self.to_clean):
            try:
                self.client.begin_delete_secret(name).wait(timeout=POLL_TIMEOUT_S)
                self.client.purge_deleted_secret(name)
            except HttpResponseError:
                pass
            except AzureError:
                return  # the vault is unreachable: nothing to clean


def is_version(v):
    return isinstance(v, str) and len(v) == 32 and all(c in "0123456789abcdef" for c in v)


def main():
    url = os.environ.get("VAULTSYNC_TEST_EMULATOR_URL", "")
    ca_file = os.environ.get("VAULTSYNC_TEST_CA_FILE", "")
    if not url or not ca_file:
        print("python scenario: VAULTSYNC_TEST_EMULATOR_URL and VAULTSYNC_TEST_CA_FILE must be set", file=sys.stderr)
        return 2
    credential = StaticCredential()
    client = SecretClient(
        vault_url=url,
        credential=credential,
        api_version=API_VERSION,
        # The emulator's host (127.0.0.1) can never match the challenge's resource.
        verify_challenge_resource=False,
        connection_verify=ca_file,
        # A failing emulator should fail the run quickly, not after minutes of back-off.
        retry_total=2,
    )
    name = "kvclients-py-" + secrets.token_hex(6)
    scenario = Scenario(client, credential, name)
    print(f"python scenario: secret {name} on {url} (api-version {API_VERSION})", flush=True)
    try:
        scenario.run()
    except Exception as e:  # every failure, assertion or SDK error, names its step
        kind = "" if isinstance(e, StepFailed) else f"{type(e).__name__}: "
        print(f"python scenario: FAILED at step {scenario.step}: {kind}{e}", file=sys.stderr, flush=True)
        scenario.clean_up()
        return 1
    print("python scenario: all steps passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
