package certs_test

import (
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/nodepki/nodepki/pkg/certs"
)

func TestCheckSAN(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		san  string
		want string // "" accepts
	}{
		{"node3.example.com", ""},
		{"node3.example.com.", ""},
		{" node-3 ", ""},
		{"10.5.0.3", ""},
		{"fd00::3", ""},
		{"*.bad", "wildcard names are not allowed"},
		{"a.*.example", "wildcard names are not allowed"},
		{"", "is empty"},
		{" . ", "is empty"},
		{"0.0.0.0", "unspecified address"},
		{"::", "unspecified address"},
		{"a..b", "no empty label"},
		{"-a.example", "starts or ends with a hyphen"},
		{"under_score", `character '_'`},
		{"nöde", `character 'ö'`},
		{strings.Repeat("a", 64) + ".example", "every label must be 1 to 63"},
		{strings.Repeat("abcdefg.", 32) + "example", "must be 1 to 253"},
	} {
		err := certs.CheckSAN(tc.san)
		if tc.want == "" {
			assert.NoError(t, err, "%q", tc.san)
		} else {
			assert.ErrorContains(t, err, tc.want, "%q", tc.san)
		}
	}
}

// TestCheckDNSNameRefusesIPs keeps a CSR from carrying an address as a DNS name.
func TestCheckDNSNameRefusesIPs(t *testing.T) {
	t.Parallel()

	assert.ErrorContains(t, certs.CheckDNSName("10.5.0.3"), "is an IP address")
	assert.NoError(t, certs.CheckIPSAN(net.ParseIP("10.5.0.3")))
}

func FuzzCheckSAN(f *testing.F) {
	for _, seed := range []string{"node.example.com", "*.bad", "10.0.0.1", "::", "a..b", "-x", "", "x_y"} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, san string) {
		err := certs.CheckSAN(san)
		if err != nil {
			return
		}

		// An accepted name is one trustd signs: an IP address or a DNS name of the allowed shape.
		name := strings.TrimSuffix(strings.TrimSpace(san), ".")
		if ip := net.ParseIP(name); ip != nil {
			if ip.IsUnspecified() {
				t.Fatalf("accepted the unspecified address %q", san)
			}

			return
		}

		if err = certs.CheckDNSName(name); err != nil {
			t.Fatalf("accepted %q, which trustd refuses: %v", san, err)
		}

		if strings.ContainsAny(name, "*_ ") {
			t.Fatalf("accepted %q", san)
		}
	})
}
