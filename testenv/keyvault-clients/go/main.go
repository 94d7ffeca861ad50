// Command keyvault-clients runs the official Go Key Vault secrets client (azsecrets)
// against the project's Key Vault emulator: one scripted scenario, the same as the
// Python one (../python/scenario.py) and the Rust one (tests/keyvault_clients.rs).
//
// Environment: VAULTSYNC_TEST_EMULATOR_URL (https base URL of one emulator vault) and
// VAULTSYNC_TEST_CA_FILE (PEM CA the emulator's certificate chains to).
//
// Each step asserts; the first failure names its step and exits 1. Secret values are
// never printed: they are random and only compared.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

const (
	apiVersion = "2025-07-01"
	// Any non-empty bearer token is accepted by the emulator.
	fakeToken = "vaultsync-keyvault-clients-fake-token"
	// What the standard challenge (resource="https://vault.azure.net") must make the client ask for.
	expectedScope = "https://vault.azure.net/.default"
	// azsecrets has no page-size option, so the list walks the service's own pages
	// (at most 25 secrets each): with 25 fillers besides the scenario's secret the vault
	// holds more than one page whatever else is in it.
	fillers     = 25
	pollTimeout = 60 * time.Second
	contentType = "text/plain"
)

var (
	// A far-future expiry: the client never asks again during the run.
	farFuture = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	tags      = map[string]*string{"scenario": ptr("keyvault-clients"), "client": ptr("go")}
	versionRx = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// staticCredential hands out one fixed fake token and records the scopes asked for.
type staticCredential struct {
	mu     sync.Mutex
	scopes map[string]bool
}

func (c *staticCredential) GetToken(_ context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range opts.Scopes {
		c.scopes[s] = true
	}
	return azcore.AccessToken{Token: fakeToken, ExpiresOn: farFuture}, nil
}

// stepFailed carries the step's name out of the scenario.
type stepFailed struct {
	step string
	err  error
}

type scenario struct {
	ctx        context.Context
	client     *azsecrets.Client
	credential *staticCredential
	name       string
	fillers    []string
	step       string
	toClean    map[string]bool
}

func (s *scenario) fail(format string, args ...any) {
	panic(stepFailed{s.step, fmt.Errorf(format, args...)})
}

func (s *scenario) check(ok bool, format string, args ...any) {
	if !ok {
		s.fail(format, args...)
	}
}

func (s *scenario) must(err error, what string) {
	if err != nil {
		s.fail("%s: %w", what, err)
	}
}

// waitDeleted polls the deleted secret until it is there, as the SDKs' delete pollers do
// (Key Vault answers 404 while the deletion is still in progress).
func (s *scenario) waitDeleted(name string) {
	deadline := time.Now().Add(pollTimeout)
	for {
		_, err := s.client.GetDeletedSecret(s.ctx, name, nil)
		if err == nil {
			return
		}
		if status(err) != http.StatusNotFound {
			s.fail("polling the deleted secret %s: %w", name, err)
		}
		s.check(time.Now().Before(deadline), "%s not in deleted secrets %s after the delete", name, pollTimeout)
		time.Sleep(time.Second)
	}
}

func (s *scenario) run() {
	value1 := "first-" + randomHex(16)
	value2 := "second-" + randomHex(16)
	var v1, v2 string

	steps := []struct {
		name string
		fn   func()
	}{
		{"set-first", func() {
			s.toClean[s.name] = true
			r, err := s.client.SetSecret(s.ctx, s.name, azsecrets.SetSecretParameters{
				Value: &value1, Tags: tags, ContentType: ptr(contentType),
			}, nil)
			s.must(err, "SetSecret")
			s.check(r.ID != nil && r.ID.Name() == s.name, "set returned id %v", r.ID)
			v1 = r.ID.Version()
			s.check(versionRx.MatchString(v1), "set returned version %q", v1)
			s.check(r.Value != nil && *r.Value == value1, "set did not echo the value it was given")
			s.check(sameTags(r.Tags), "set returned tags %v", deref(r.Tags))
			s.check(r.ContentType != nil && *r.ContentType == contentType, "set returned contentType %v", r.ContentType)
			s.check(r.Attributes != nil && r.Attributes.Enabled != nil && *r.Attributes.Enabled, "set returned a secret that is not enabled")
		}},
		{"set-second", func() {
			r, err := s.client.SetSecret(s.ctx, s.name, azsecrets.SetSecretParameters{
				Value: &value2, Tags: tags, ContentType: ptr(contentType),
			}, nil)
			s.must(err, "SetSecret")
			v2 = r.ID.Version()
			s.check(versionRx.MatchString(v2), "set returned version %q", v2)
			s.check(v2 != v1, "the second set returned the first version")
			s.check(r.Value != nil && *r.Value == value2, "set did not echo the value it was given")
		}},
		{"get-latest", func() {
			r, err := s.client.GetSecret(s.ctx, s.name, "", nil)
			s.must(err, "GetSecret")
			s.check(r.ID.Version() == v2, "latest is version %q, not the second", r.ID.Version())
			s.check(r.Value != nil && *r.Value == value2, "latest value is not the second value")
			s.check(sameTags(r.Tags), "tags %v", deref(r.Tags))
			s.check(r.ContentType != nil && *r.ContentType == contentType, "contentType %v", r.ContentType)
		}},
		{"get-first-version", func() {
			r, err := s.client.GetSecret(s.ctx, s.name, v1, nil)
			s.must(err, "GetSecret")
			s.check(r.ID.Version() == v1, "got version %q", r.ID.Version())
			s.check(r.Value != nil && *r.Value == value1, "the first version's value is not the first value")
		}},
		{"list-versions", func() {
			seen := map[string]bool{}
			pager := s.client.NewListSecretPropertiesVersionsPager(s.name, nil)
			for pager.More() {
				page, err := pager.NextPage(s.ctx)
				s.must(err, "NextPage")
				for _, p := range page.Value {
					seen[p.ID.Version()] = true
				}
			}
			s.check(seen[v1] && seen[v2], "versions listed: %v", slices.Sorted(maps.Keys(seen)))
		}},
		{"set-fillers", func() {
			for _, f := range s.fillers {
				s.toClean[f] = true
				r, err := s.client.SetSecret(s.ctx, f, azsecrets.SetSecretParameters{Value: ptr("filler-" + randomHex(8))}, nil)
				s.must(err, "SetSecret "+f)
				s.check(r.ID.Name() == f, "set returned id %v", *r.ID)
			}
		}},
		{"list-secrets", func() {
			found := map[string]*azsecrets.SecretProperties{}
			pages := 0
			pager := s.client.NewListSecretPropertiesPager(nil)
			for pager.More() {
				page, err := pager.NextPage(s.ctx)
				s.must(err, "NextPage")
				pages++
				for _, p := range page.Value {
					found[p.ID.Name()] = p
				}
			}
			var missing []string
			for _, n := range append([]string{s.name}, s.fillers...) {
				if found[n] == nil {
					missing = append(missing, n)
				}
			}
			s.check(len(missing) == 0, "not listed: %v", missing)
			s.check(pages >= 2, "only %d page(s) walked for %d secrets", pages, len(found))
			ours := found[s.name]
			s.check(ours.ID.Version() == "", "the list item carries version %q", ours.ID.Version())
			s.check(sameTags(ours.Tags), "listed tags %v", deref(ours.Tags))
			s.check(ours.ContentType != nil && *ours.ContentType == contentType, "listed contentType %v", ours.ContentType)
			fmt.Printf("go scenario:          walked %d pages, %d secrets\n", pages, len(found))
		}},
		{"delete-fillers", func() {
			for _, f := range s.fillers {
				_, err := s.client.DeleteSecret(s.ctx, f, nil)
				s.must(err, "DeleteSecret "+f)
			}
			for _, f := range s.fillers {
				s.waitDeleted(f)
				_, err := s.client.PurgeDeletedSecret(s.ctx, f, nil)
				s.must(err, "PurgeDeletedSecret "+f)
				delete(s.toClean, f)
			}
		}},
		{"disable-latest", func() {
			r, err := s.client.UpdateSecretProperties(s.ctx, s.name, v2, azsecrets.UpdateSecretPropertiesParameters{
				SecretAttributes: &azsecrets.SecretAttributes{Enabled: ptr(false)},
			}, nil)
			s.must(err, "UpdateSecretProperties")
			s.check(r.Attributes != nil && r.Attributes.Enabled != nil && !*r.Attributes.Enabled, "update did not return enabled=false")
			s.check(r.ID.Version() == v2, "update returned version %q", r.ID.Version())
			s.check(sameTags(r.Tags), "update dropped the tags: %v", deref(r.Tags))
		}},
		{"get-disabled", func() {
			_, err := s.client.GetSecret(s.ctx, s.name, "", nil)
			s.check(err != nil, "get of a disabled secret succeeded")
			var re *azcore.ResponseError
			s.check(errors.As(err, &re), "not an HTTP error: %v", err)
			s.check(re.StatusCode == http.StatusForbidden, "status %d, expected 403", re.StatusCode)
			s.check(re.ErrorCode == "Forbidden", "error code %q, expected Forbidden", re.ErrorCode)
			body, err := runtime.Payload(re.RawResponse)
			s.must(err, "reading the error body")
			var kv struct {
				Error struct {
					Code       string `json:"code"`
					InnerError struct {
						Code string `json:"code"`
					} `json:"innererror"`
				} `json:"error"`
			}
			s.must(json.Unmarshal(body, &kv), "the error body is not Key Vault's error JSON")
			s.check(kv.Error.InnerError.Code == "SecretDisabled", "innererror code %q, expected SecretDisabled", kv.Error.InnerError.Code)
		}},
		// Key Vault keeps a disabled version disabled through delete and recover (a
		// deleted disabled secret even answers 403 SecretDisabled on GET /deletedsecrets),
		// so the version is enabled again before the delete/recover part.
		{"enable-latest", func() {
			r, err := s.client.UpdateSecretProperties(s.ctx, s.name, v2, azsecrets.UpdateSecretPropertiesParameters{
				SecretAttributes: &azsecrets.SecretAttributes{Enabled: ptr(true)},
			}, nil)
			s.must(err, "UpdateSecretProperties")
			s.check(r.Attributes != nil && r.Attributes.Enabled != nil && *r.Attributes.Enabled, "update did not return enabled=true")
		}},
		{"delete", func() {
			r, err := s.client.DeleteSecret(s.ctx, s.name, nil)
			s.must(err, "DeleteSecret")
			s.check(r.ID != nil && r.ID.Name() == s.name, "delete returned id %v", r.ID)
			s.check(r.RecoveryID != nil && *r.RecoveryID != "", "delete returned no recoveryId (soft delete off?)")
			s.check(r.DeletedDate != nil && r.ScheduledPurgeDate != nil, "delete returned no deletedDate/scheduledPurgeDate")
			s.waitDeleted(s.name)
		}},
		{"get-deleted", func() {
			r, err := s.client.GetDeletedSecret(s.ctx, s.name, nil)
			s.must(err, "GetDeletedSecret")
			s.check(r.ID.Name() == s.name, "id %v", *r.ID)
			s.check(r.RecoveryID != nil && *r.RecoveryID != "", "no recoveryId")
			s.check(sameTags(r.Tags), "tags %v", deref(r.Tags))
		}},
		{"recover", func() {
			r, err := s.client.RecoverDeletedSecret(s.ctx, s.name, nil)
			s.must(err, "RecoverDeletedSecret")
			s.check(r.ID != nil && r.ID.Name() == s.name, "recover returned id %v", r.ID)
			// As the SDKs' recover pollers do: the secret can answer 404 for a moment.
			deadline := time.Now().Add(pollTimeout)
			for {
				_, err := s.client.GetSecret(s.ctx, s.name, "", nil)
				if err == nil {
					break
				}
				if status(err) != http.StatusNotFound {
					s.fail("polling the recovered secret: %w", err)
				}
				s.check(time.Now().Before(deadline), "not back %s after the recover", pollTimeout)
				time.Sleep(time.Second)
			}
		}},
		{"get-after-recover", func() {
			r, err := s.client.GetSecret(s.ctx, s.name, "", nil)
			s.must(err, "GetSecret")
			s.check(r.ID.Version() == v2, "latest is version %q, not the second", r.ID.Version())
			s.check(r.Value != nil && *r.Value == value2, "latest value is not the second value")
			r, err = s.client.GetSecret(s.ctx, s.name, v1, nil)
			s.must(err, "GetSecret first version")
			s.check(r.Value != nil && *r.Value == value1, "the first version's value is not the first value")
		}},
		{"delete-again", func() {
			_, err := s.client.DeleteSecret(s.ctx, s.name, nil)
			s.must(err, "DeleteSecret")
			s.waitDeleted(s.name)
		}},
		{"purge", func() {
			_, err := s.client.PurgeDeletedSecret(s.ctx, s.name, nil)
			s.must(err, "PurgeDeletedSecret")
			delete(s.toClean, s.name)
			deadline := time.Now().Add(pollTimeout)
			for {
				_, err := s.client.GetDeletedSecret(s.ctx, s.name, nil)
				if status(err) == http.StatusNotFound {
					return
				}
				s.check(time.Now().Before(deadline), "still in deleted secrets %s after the purge (last: %v)", pollTimeout, err)
				time.Sleep(time.Second)
			}
		}},
		{"token-scope", func() {
			scopes := slices.Sorted(maps.Keys(s.credential.scopes))
			s.check(slices.Equal(scopes, []string{expectedScope}), "the client asked for scopes %v", scopes)
		}},
	}
	for _, st := range steps {
		s.step = st.name
		st.fn()
		fmt.Printf("go scenario: ok   %s\n", st.name)
	}
}

// cleanUp is the best effort after a failure: delete and purge whatever this run may have left.
func (s *scenario) cleanUp() {
	for name := range s.toClean {
		if _, err := s.client.DeleteSecret(s.ctx, name, nil); err != nil && status(err) == 0 {
			return // the vault is unreachable: nothing to clean
		}
	}
	for name := range s.toClean {
		for i := 0; i < 10; i++ {
			_, err := s.client.PurgeDeletedSecret(s.ctx, name, nil)
			if status(err) != http.StatusConflict {
				break // purged, never deleted, or something a retry will not change
			}
			time.Sleep(time.Second)
		}
	}
}

func newClient(url, caFile string, cred azcore.TokenCredential) (*azsecrets.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	transport := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
		Timeout:   30 * time.Second,
	}
	return azsecrets.NewClient(url, cred, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{
			APIVersion: apiVersion,
			Transport:  transport,
			// A failing emulator should fail the run quickly, not after minutes of back-off.
			Retry: policy.RetryOptions{MaxRetries: 2},
		},
		// The emulator's host (127.0.0.1) can never match the challenge's resource.
		DisableChallengeResourceVerification: true,
	})
}

func main() {
	url, caFile := os.Getenv("VAULTSYNC_TEST_EMULATOR_URL"), os.Getenv("VAULTSYNC_TEST_CA_FILE")
	if url == "" || caFile == "" {
		fmt.Fprintln(os.Stderr, "go scenario: VAULTSYNC_TEST_EMULATOR_URL and VAULTSYNC_TEST_CA_FILE must be set")
		os.Exit(2)
	}
	cred := &staticCredential{scopes: map[string]bool{}}
	client, err := newClient(url, caFile, cred)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go scenario: FAILED at step client: %v\n", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := &scenario{ctx: ctx, client: client, credential: cred, name: "kvclients-go-" + randomHex(6), toClean: map[string]bool{}}
	for i := 0; i < fillers; i++ {
		s.fillers = append(s.fillers, fmt.Sprintf("%s-f%02d", s.name, i))
	}
	fmt.Printf("go scenario: secret %s on %s (api-version %s)\n", s.name, url, apiVersion)
	if failed := runCatching(s); failed != nil {
		fmt.Fprintf(os.Stderr, "go scenario: FAILED at step %s: %v\n", failed.step, failed.err)
		s.cleanUp()
		os.Exit(1)
	}
	fmt.Println("go scenario: all steps passed")
}

func runCatching(s *scenario) (failed *stepFailed) {
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(stepFailed); ok {
				failed = &f
				return
			}
			failed = &stepFailed{s.step, fmt.Errorf("panic: %v", r)}
		}
	}()
	s.run()
	return nil
}

func status(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func sameTags(got map[string]*string) bool {
	return maps.EqualFunc(got, tags, func(a, b *string) bool { return a != nil && b != nil && *a == *b })
}

func deref(m map[string]*string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func ptr[T any](v T) *T { return &v }
