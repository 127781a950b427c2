package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v4"
	"google.golang.org/grpc/metadata"

	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/client/clienttest"
	"github.com/nodepki/nodepki/resources/pki"
)

func addStatus(t *testing.T, st state.State, id, certState, notAfter string) {
	t.Helper()

	status := pki.NewCertificateStatus(id)
	status.TypedSpec().Root = "os"
	status.TypedSpec().Subject = "CN=" + id
	status.TypedSpec().IssuerFingerprint = "ab12"
	status.TypedSpec().IssuerShortFingerprint = "ab12"
	status.TypedSpec().NotAfter = mustTime(t, notAfter)
	status.TypedSpec().RenewAt = mustTime(t, "2030-01-01T00:00:00Z")
	status.TypedSpec().State = certState
	status.TypedSpec().Trusted = true
	require.NoError(t, st.Create(t.Context(), status))
}

func mustTime(t *testing.T, s string) pki.Time {
	t.Helper()

	v, err := pki.ParseTime(s)
	require.NoError(t, err)

	return v
}

// startNodeWithStatuses is startNode with two CertificateStatuses: api (valid) and etcd-server
// (expiring).
func startNodeWithStatuses(t *testing.T, nodes ...string) (*clienttest.Server, string) {
	t.Helper()

	srv, path := startNode(t, nodes...)
	addStatus(t, srv.State, "api", pki.StateValid, "2031-01-01T00:00:00Z")
	addStatus(t, srv.State, "etcd-server", pki.StateExpiring, "2026-06-01T00:00:00Z")

	return srv, path
}

// table splits table output into rows of fields.
func table(out string) [][]string {
	var rows [][]string

	for line := range strings.Lines(out) {
		rows = append(rows, strings.Fields(line))
	}

	return rows
}

func TestGetTable(t *testing.T) {
	t.Parallel()

	_, path := startNodeWithStatuses(t, "node1")

	for _, tc := range []struct {
		name     string
		args     []string
		wantRows [][]string
	}{
		{
			name: "by alias",
			args: []string{"get", "cs"},
			wantRows: [][]string{
				{"NODE", "NAMESPACE", "TYPE", "ID", "VERSION", "ISSUER", "NOT-AFTER", "RENEW-AT", "STATE"},
				{"node1", "pki", "CertificateStatus", "api", "1", "ab12", "2031-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "valid"},
				{"node1", "pki", "CertificateStatus", "etcd-server", "1", "ab12", "2026-06-01T00:00:00Z", "2030-01-01T00:00:00Z", "expiring"},
			},
		},
		{
			name: "one resource by full type",
			args: []string{"get", "CertificateStatuses.pki.nodepki.dev", "etcd-server"},
			wantRows: [][]string{
				{"NODE", "NAMESPACE", "TYPE", "ID", "VERSION", "ISSUER", "NOT-AFTER", "RENEW-AT", "STATE"},
				{"node1", "pki", "CertificateStatus", "etcd-server", "1", "ab12", "2026-06-01T00:00:00Z", "2030-01-01T00:00:00Z", "expiring"},
			},
		},
		{
			name: "two nodes",
			args: []string{"-n", "node1,node2", "get", "certificatestatus", "api"},
			wantRows: [][]string{
				{"NODE", "NAMESPACE", "TYPE", "ID", "VERSION", "ISSUER", "NOT-AFTER", "RENEW-AT", "STATE"},
				{"node1", "pki", "CertificateStatus", "api", "1", "ab12", "2031-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "valid"},
				{"node2", "pki", "CertificateStatus", "api", "1", "ab12", "2031-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "valid"},
			},
		},
		{
			name:     "empty namespace",
			args:     []string{"get", "cs", "--namespace", "config"},
			wantRows: [][]string{{"NODE", "NAMESPACE", "TYPE", "ID", "VERSION", "ISSUER", "NOT-AFTER", "RENEW-AT", "STATE"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			out, _, err := runCLI(t.Context(), t, append([]string{"--talosconfig", path}, tc.args...)...)
			require.NoError(t, err)
			assert.Equal(t, tc.wantRows, table(out))
		})
	}
}

func TestGetResourceDefinitions(t *testing.T) {
	t.Parallel()

	_, path := startNode(t, "node1")

	out, _, err := runCLI(t.Context(), t, "--talosconfig", path, "get", "rd")
	require.NoError(t, err)

	rows := table(out)
	require.Equal(t, []string{"NODE", "NAMESPACE", "TYPE", "ID", "VERSION", "ALIASES"}, rows[0])

	found := false

	for _, row := range rows[1:] {
		if row[3] == "certificatestatuses.pki.nodepki.dev" {
			found = true

			assert.Equal(t, []string{"node1", "meta", "ResourceDefinition"}, row[:3])
			assert.Subset(t, row[5:], []string{"certstatus", "cs", "certificatestatus"})
		}
	}

	assert.True(t, found, "certificatestatuses missing from:\n%s", out)
}

func TestGetWithoutNodesLabelsTheEndpoint(t *testing.T) {
	t.Parallel()

	_, path := startNodeWithStatuses(t)

	out, _, err := runCLI(t.Context(), t, "--talosconfig", path, "get", "cs", "api")
	require.NoError(t, err)

	rows := table(out)
	require.Len(t, rows, 2)
	assert.Equal(t, "127.0.0.1", rows[1][0])
}

func TestGetYAML(t *testing.T) {
	t.Parallel()

	_, path := startNodeWithStatuses(t, "node1")

	out, _, err := runCLI(t.Context(), t, "--talosconfig", path, "get", "cs", "-o", "yaml")
	require.NoError(t, err)

	docs := strings.Split(out, "---\n")
	require.Len(t, docs, 2)
	assert.True(t, strings.HasPrefix(out, "node: node1\nmetadata:\n"), out)

	for i, wantID := range []string{"api", "etcd-server"} {
		var doc struct {
			Node     string         `yaml:"node"`
			Metadata map[string]any `yaml:"metadata"`
			Spec     map[string]any `yaml:"spec"`
			Extra    map[string]any `yaml:",inline"`
		}

		require.NoError(t, yaml.Unmarshal([]byte(docs[i]), &doc))
		assert.Equal(t, "node1", doc.Node)
		assert.Equal(t, wantID, doc.Metadata["id"])
		assert.Equal(t, "pki", doc.Metadata["namespace"])
		assert.Equal(t, "CertificateStatuses.pki.nodepki.dev", doc.Metadata["type"])
		assert.Equal(t, "running", doc.Metadata["phase"])
		assert.Equal(t, "CN="+wantID, doc.Spec["subject"])
		assert.Equal(t, true, doc.Spec["trusted"])
		assert.Empty(t, doc.Extra)
	}
}

func TestGetJSON(t *testing.T) {
	t.Parallel()

	_, path := startNodeWithStatuses(t, "node1")

	out, _, err := runCLI(t.Context(), t, "--talosconfig", path, "get", "cs", "api", "-o", "json")
	require.NoError(t, err)

	assert.Contains(t, out, "\n    \"metadata\": {", "JSON is indented with 4 spaces")

	var doc map[string]any

	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	assert.Equal(t, "node1", doc["node"])
	assert.Equal(t, "api", doc["metadata"].(map[string]any)["id"])
	assert.Equal(t, "valid", doc["spec"].(map[string]any)["state"])
	assert.NotContains(t, doc, "event")
}

func TestGetJSONPath(t *testing.T) {
	t.Parallel()

	_, path := startNodeWithStatuses(t, "node1")

	for _, tc := range []struct {
		expr, want string
	}{
		{expr: "jsonpath={.spec.state}", want: "valid\nexpiring\n"},
		{expr: "jsonpath=.metadata.id", want: "api\netcd-server\n"},
		{expr: "jsonpath={.node}", want: "node1\nnode1\n"},
		{expr: "jsonpath={.spec.nosuchfield}", want: ""},
		{expr: "jsonpath={.metadata.type}", want: "CertificateStatuses.pki.nodepki.dev\nCertificateStatuses.pki.nodepki.dev\n"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			t.Parallel()

			out, _, err := runCLI(t.Context(), t, "--talosconfig", path, "get", "cs", "-o", tc.expr)
			require.NoError(t, err)
			assert.Equal(t, tc.want, out)
		})
	}

	// A structure is printed as JSON.
	out, _, err := runCLI(t.Context(), t, "--talosconfig", path, "get", "cs", "api", "-o", "jsonpath={.spec}")
	require.NoError(t, err)

	var spec map[string]any

	require.NoError(t, json.Unmarshal([]byte(out), &spec))
	assert.Equal(t, "valid", spec["state"])
}

func TestGetErrors(t *testing.T) {
	t.Parallel()

	_, path := startNodeWithStatuses(t, "node1")

	for _, tc := range []struct {
		name    string
		args    []string
		wantErr []string
		// wantOut is printed despite the error.
		wantOut string
	}{
		{
			name: "unknown type", args: []string{"get", "nosuchtype"},
			wantErr: []string{`resource "nosuchtype" is not registered`, "nodepkictl get rd"},
		},
		{name: "unknown id", args: []string{"get", "cs", "kube-apiserver"}, wantErr: []string{"node1: ", "doesn't exist"}},
		{name: "unknown output", args: []string{"get", "cs", "-o", "table2"}, wantErr: []string{`unknown output format "table2"`, "jsonpath=EXPR"}},
		{name: "jsonpath without expression", args: []string{"get", "cs", "-o", "jsonpath"}, wantErr: []string{"needs an expression"}},
		{name: "bad jsonpath", args: []string{"get", "cs", "-o", "jsonpath={.spec["}, wantErr: []string{"invalid expression"}},
		{
			name: "one node unreachable", args: []string{"-n", "node1,node9,node2", "get", "cs", "api"},
			wantErr: []string{`node9: rpc error: code = Unavailable desc = node "node9" is not reachable`},
			wantOut: "node2",
		},
		{
			name: "first node unreachable", args: []string{"-n", "node9,node1", "get", "cs", "api"},
			wantErr: []string{`node9: rpc error: code = Unavailable desc = node "node9" is not reachable`},
			wantOut: "node1",
		},
		{name: "no type", args: []string{"get"}, wantErr: []string{"accepts between 1 and 2 arg(s)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			out, _, err := runCLI(t.Context(), t, append([]string{"--talosconfig", path}, tc.args...)...)
			require.Error(t, err)

			for _, want := range tc.wantErr {
				assert.ErrorContains(t, err, want)
			}

			if tc.wantOut != "" {
				assert.Contains(t, out, tc.wantOut)
				assert.Contains(t, out, "node1")
				assert.NotContains(t, out, "node9")
			}
		})
	}
}

// waitFor polls the output until it contains every line fragment in order of appearance.
func waitFor(t *testing.T, out *syncBuffer, done <-chan error, match func(rows [][]string) bool) {
	t.Helper()

	deadline := time.After(10 * time.Second)

	for {
		if match(table(out.String())) {
			return
		}

		select {
		case err := <-done:
			t.Fatalf("watch ended early: %v\noutput:\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("timed out; output:\n%s", out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func hasRow(want ...string) func(rows [][]string) bool {
	return func(rows [][]string) bool {
		for _, row := range rows {
			if len(row) >= len(want) && equalPrefix(row, want) {
				return true
			}
		}

		return false
	}
}

func equalPrefix(row, want []string) bool {
	for i := range want {
		if want[i] != "" && row[i] != want[i] {
			return false
		}
	}

	return true
}

func TestGetWatch(t *testing.T) {
	t.Parallel()

	srv, path := startNodeWithStatuses(t, "node1")

	for _, tc := range []struct {
		name string
		args []string
	}{
		{name: "kind", args: []string{"get", "cs", "--watch"}},
		{name: "single resource", args: []string{"get", "cs", "kube-apiserver", "-w"}},
	} {
		// Sequential: both subtests create and destroy the same resource.
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()

			var out, errOut syncBuffer

			done := make(chan error, 1)

			go func() {
				done <- runCLIWith(ctx, &out, &errOut, append([]string{"--talosconfig", path}, tc.args...)...)
			}()

			waitFor(t, &out, done, hasRow("NODE", "*", "NAMESPACE", "TYPE", "ID", "VERSION", "ISSUER", "NOT-AFTER", "RENEW-AT", "STATE"))

			if tc.name == "kind" {
				waitFor(t, &out, done, hasRow("node1", "+", "pki", "CertificateStatus", "etcd-server", "1"))
			}

			addStatus(t, srv.State, "kube-apiserver", pki.StatePending, "")
			waitFor(t, &out, done, hasRow("node1", "+", "pki", "CertificateStatus", "kube-apiserver", "1", "ab12", "2030-01-01T00:00:00Z", "pending"))

			status := pki.NewCertificateStatus("kube-apiserver")
			_, err := safe.StateUpdateWithConflicts(t.Context(), srv.State, status.Metadata(), func(r *pki.CertificateStatus) error {
				r.TypedSpec().State = pki.StateValid
				r.TypedSpec().NotAfter = mustTime(t, "2031-02-02T00:00:00Z")

				return nil
			})
			require.NoError(t, err)

			// An update has a blank change column, so the row has no "*" field at all.
			waitFor(t, &out, done, hasRow("node1", "pki", "CertificateStatus", "kube-apiserver", "2", "ab12", "2031-02-02T00:00:00Z", "2030-01-01T00:00:00Z", "valid"))

			require.NoError(t, srv.State.Destroy(t.Context(), status.Metadata()))
			waitFor(t, &out, done, hasRow("node1", "-", "pki", "CertificateStatus", "kube-apiserver", "2"))

			cancel()

			select {
			case err := <-done:
				require.NoError(t, err, "Ctrl-C ends a watch without error")
			case <-time.After(10 * time.Second):
				t.Fatal("watch did not stop on cancel")
			}

			if tc.name == "single resource" {
				assert.NotContains(t, out.String(), "etcd-server", "a single-resource watch shows that resource only")
			}

			assert.Empty(t, errOut.String())
		})
	}
}

func TestGetWatchYAMLCarriesEvents(t *testing.T) {
	t.Parallel()

	srv, path := startNodeWithStatuses(t, "node1")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	var out, errOut syncBuffer

	done := make(chan error, 1)

	go func() {
		done <- runCLIWith(ctx, &out, &errOut, "--talosconfig", path, "get", "cs", "-w", "-o", "yaml")
	}()

	addStatus(t, srv.State, "trustd", pki.StateValid, "")

	waitFor(t, &out, done, func([][]string) bool {
		return strings.Contains(out.String(), "node: node1\nevent: created\nmetadata:\n    namespace: pki\n    type: CertificateStatuses.pki.nodepki.dev\n    id: trustd\n")
	})

	cancel()
	require.NoError(t, <-done)
}

func TestGetWatchReportsAnUnreachableNode(t *testing.T) {
	t.Parallel()

	_, path := startNodeWithStatuses(t, "node1")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	var out, errOut syncBuffer

	done := make(chan error, 1)

	go func() {
		done <- runCLIWith(ctx, &out, &errOut, "--talosconfig", path, "-n", "node1,node9", "get", "cs", "-w")
	}()

	// node1 keeps being watched while node9's refusal is reported at once.
	waitFor(t, &out, done, hasRow("node1", "+", "pki", "CertificateStatus", "etcd-server"))
	waitFor(t, &out, done, func([][]string) bool {
		return strings.Contains(errOut.String(), `node9: rpc error: code = Unavailable desc = node "node9" is not reachable`)
	})

	cancel()

	err := <-done
	require.Error(t, err, "a node that could not be watched makes the exit status non-zero")
	assert.ErrorContains(t, err, "node9")
	assert.NotContains(t, err.Error(), "node1")
}

// flakyState serves WatchKind from a script: the first subscription of node "refused" fails,
// every other node's first subscription breaks after one event, and later ones work.
type flakyState struct {
	state.State

	mu    sync.Mutex
	calls map[string]int
}

func (f *flakyState) WatchKind(ctx context.Context, _ resource.Kind, ch chan<- state.Event, _ ...state.WatchKindOption) error {
	node := nodeFromOutgoing(ctx)

	f.mu.Lock()
	f.calls[node]++
	call := f.calls[node]
	f.mu.Unlock()

	if node == "refused" {
		return errors.New("permission denied")
	}

	status := pki.NewCertificateStatus("api")
	status.Metadata().SetVersion(resource.VersionUndefined.Next())
	status.TypedSpec().State = pki.StateValid

	events := []state.Event{{Type: state.Created, Resource: status}, {Type: state.Errored, Error: errors.New("stream reset")}}
	if call > 1 {
		events = []state.Event{{Type: state.Created, Resource: status}, {Type: state.Bootstrapped}}
	}

	go func() {
		for _, ev := range events {
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()

	return nil
}

func nodeFromOutgoing(ctx context.Context) string {
	md, _ := metadata.FromOutgoingContext(ctx)

	if values := md.Get(client.NodeMetadataKey); len(values) > 0 {
		return values[0]
	}

	return ""
}

func TestWatchResubscribesAfterAnError(t *testing.T) {
	t.Parallel()

	st := &flakyState{calls: map[string]int{}}

	rd, err := meta.NewResourceDefinition(pki.CertificateStatusExtension{}.ResourceDefinition())
	require.NoError(t, err)

	var out, errOut syncBuffer

	printer, err := newResourcePrinter("table", &out, true)
	require.NoError(t, err)
	require.NoError(t, printer.WriteHeader(rd))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	done := make(chan error, 1)
	kind := resource.NewMetadata(pki.NamespaceName, pki.CertificateStatusesType, "", resource.VersionUndefined)

	go func() {
		done <- watchResources(ctx, &errOut, st, []target{{node: "node1", label: "node1"}, {node: "refused", label: "refused"}}, printer, kind, "")
	}()

	// node1's first watch breaks; the resubscription replays the resource.
	waitFor(t, &out, done, func(rows [][]string) bool {
		count := 0

		for _, row := range rows {
			if len(row) > 4 && row[0] == "node1" && row[1] == "+" && row[4] == "api" {
				count++
			}
		}

		return count == 2
	})

	cancel()

	err = <-done
	require.Error(t, err)
	assert.EqualError(t, err, "refused: permission denied", "the refused subscription is reported, the broken one is not")
	assert.Contains(t, errOut.String(), "node1: watch interrupted, re-subscribing: stream reset\n")
	assert.Contains(t, errOut.String(), "refused: permission denied\n")

	st.mu.Lock()
	defer st.mu.Unlock()

	assert.Equal(t, map[string]int{"node1": 2, "refused": 1}, st.calls)
}

// TestGetWatchKeepsColumnsAligned: the rows a watch prints one by one, after the current
// resources, line up with the header.
func TestGetWatchKeepsColumnsAligned(t *testing.T) {
	t.Parallel()

	srv, path := startNodeWithStatuses(t, "node1")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	var out, errOut syncBuffer

	done := make(chan error, 1)

	go func() {
		done <- runCLIWith(ctx, &out, &errOut, "--talosconfig", path, "get", "cs", "-w")
	}()

	waitFor(t, &out, done, hasRow("node1", "+", "pki", "CertificateStatus", "etcd-server", "1"))

	addStatus(t, srv.State, "etcd-peer", pki.StatePending, "")
	waitFor(t, &out, done, hasRow("node1", "+", "pki", "CertificateStatus", "etcd-peer", "1"))

	status := pki.NewCertificateStatus("etcd-peer")
	_, err := safe.StateUpdateWithConflicts(t.Context(), srv.State, status.Metadata(), func(r *pki.CertificateStatus) error {
		r.TypedSpec().State = pki.StateValid

		return nil
	})
	require.NoError(t, err)
	waitFor(t, &out, done, hasRow("node1", "pki", "CertificateStatus", "etcd-peer", "2"))

	cancel()
	require.NoError(t, <-done)

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, 5, out.String())

	header := lines[0]

	for _, column := range []string{"NAMESPACE", "TYPE", "ID", "VERSION", "ISSUER", "RENEW-AT", "STATE"} {
		at := strings.Index(header, " "+column) + 1
		require.Positive(t, at, header)

		for _, line := range lines[1:] {
			require.Greater(t, len(line), at, line)
			assert.True(t, line[at-1] == ' ' && line[at] != ' ', "column %s does not start at %d in\n%s\n%s", column, at, header, line)
		}
	}
}
