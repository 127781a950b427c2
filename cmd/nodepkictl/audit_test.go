package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/audit"
)

func TestAuditPrinter(t *testing.T) {
	t.Parallel()

	at := time.Date(2026, 11, 29, 19, 0, 0, 0, time.UTC)

	for _, tc := range []struct {
		name  string
		event audit.Event
		want  string
	}{
		{
			"patch",
			audit.Event{
				Time: at, Type: audit.TypeConfigPatched, Node: "127.0.130.3",
				Caller:  &audit.Caller{Subject: "O=os:admin", Roles: []string{"os:admin"}, Serial: "0A", Address: "127.0.0.1:5", ForwardedBy: "CN=cp 1,O=os:impersonator"},
				Changed: []string{"machine.certSANs", "machine.token"},
			},
			`2026-11-29T19:00:00Z  127.0.130.3      config.patched      caller=O=os:admin roles=os:admin serial=0A from=127.0.0.1:5 via="CN=cp 1,O=os:impersonator" changed=machine.certSANs,machine.token` + "\n",
		},
		{
			"signed",
			audit.Event{
				Time: at, Type: audit.TypeTrustdSigned, Node: "127.0.130.2",
				Certificate: &audit.Certificate{CommonName: "w1", DNSNames: []string{"w1"}, IPAddresses: []string{"127.0.130.3"}, Serial: "0B", Lifetime: "24h0m0s", Requester: "127.0.130.3"},
			},
			"2026-11-29T19:00:00Z  127.0.130.2      trustd.signed       requester=127.0.130.3 cn=w1 sans=w1,127.0.130.3 issued-serial=0B lifetime=24h0m0s\n",
		},
		{
			"rotation",
			audit.Event{
				Time: at, Type: audit.TypeRotationStep, Node: "127.0.130.2",
				Roots: []audit.RootChange{
					{Root: "os", Step: audit.StepIssuingChanged, From: "aaaaaaaaaaaaaaaa", To: "bbbbbbbbbbbbbbbb"},
					{Root: "join-token", Step: audit.StepAcceptedAdded, Count: 1},
				},
			},
			"2026-11-29T19:00:00Z  127.0.130.2      rotation.step       root=os:issuing-changed:aaaaaaaaaaaa->bbbbbbbbbbbb root=join-token:accepted-added:1\n",
		},
		{
			"refused",
			audit.Event{
				Time: at, Type: audit.TypeRefused, Node: "127.0.130.2",
				Refusal: &audit.Refusal{Service: "api", Peer: "127.0.0.1", Count: 7, Method: "/m", Reason: "not authorized", Window: at},
			},
			`2026-11-29T19:00:00Z  127.0.130.2      refused             service=api peer=127.0.0.1 count=7 method=/m reason="not authorized"` + "\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			line, err := audit.Marshal(tc.event)
			assert.NoError(t, err)

			var stdout, stderr, jsonOut bytes.Buffer

			(&auditPrinter{stdout: &stdout, stderr: &stderr}).print("node", &nodeapi.AuditLine{Line: line})
			assert.Equal(t, tc.want, stdout.String())
			assert.Empty(t, stderr.String())

			(&auditPrinter{stdout: &jsonOut, stderr: &stderr, json: true}).print("node", &nodeapi.AuditLine{Line: line})
			assert.Equal(t, string(line)+"\n", jsonOut.String(), "-o json prints the line as stored")
		})
	}

	var stdout, stderr bytes.Buffer

	(&auditPrinter{stdout: &stdout, stderr: &stderr}).print("127.0.130.3", &nodeapi.AuditLine{Warning: "audit.log line 3: skipped"})
	assert.Empty(t, stdout.String())
	assert.Equal(t, "warning: 127.0.130.3: audit.log line 3: skipped\n", stderr.String())
}
