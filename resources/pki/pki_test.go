package pki_test

import (
	"encoding/hex"
	"net/netip"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/resources/pki"
)

func mustTime(t *testing.T, s string) pki.Time {
	t.Helper()

	v, err := pki.ParseTime(s)
	require.NoError(t, err)

	return v
}

// TestRendering pins the YAML and protobuf forms of typed spec fields to what they were as
// strings: users' jsonpath scripts read the YAML, and clients of other versions the protobuf.
func TestRendering(t *testing.T) {
	t.Parallel()

	status := pki.NewCertificateStatus(pki.CertAPI)
	*status.TypedSpec() = pki.CertificateStatusSpec{
		Root: "os", Subject: "CN=node-1", DNSNames: []string{"node-1"}, IPAddresses: []string{"10.5.0.2", "2001:db8::2"},
		Serial: "ab12", Issuer: "O=talos", IssuerFingerprint: "ff00",
		NotBefore: mustTime(t, "2026-03-04T12:00:00Z"), NotAfter: mustTime(t, "2026-03-05T12:00:00Z"), RenewAt: mustTime(t, "2026-03-05T04:00:00Z"),
		Trusted: true, State: "valid", LastError: "boom", IssuerShortFingerprint: "ff00",
	}

	pending := pki.NewCertificateStatus(pki.CertEtcdServer)
	*pending.TypedSpec() = pki.CertificateStatusSpec{Root: "etcd", State: "pending", LastError: "no key"}

	crt := pki.NewNodeCertificate(pki.CertAPI)
	*crt.TypedSpec() = pki.NodeCertificateSpec{
		Root: "os", Certificate: "C", Key: "K", CABundle: "B", IssuerFingerprint: "ff", Request: "d", RenewAt: mustTime(t, "2026-03-05T04:00:00Z"),
	}

	sans := pki.NewCertSAN(pki.SANsAPI)
	*sans.TypedSpec() = pki.CertSANSpec{IPs: []netip.Addr{netip.MustParseAddr("10.5.0.2"), netip.MustParseAddr("2001:db8::2")}, DNSNames: []string{"a"}}

	emptySANs := pki.NewCertSAN(pki.SANsEtcd)
	*emptySANs.TypedSpec() = pki.CertSANSpec{IPs: []netip.Addr{}, DNSNames: []string{}}

	for _, tc := range []struct {
		res   resource.Resource
		yaml  string
		proto string // hex; "" when not pinned
	}{
		{
			res: status,
			yaml: `root: os
subject: CN=node-1
dnsNames:
    - node-1
ipAddresses:
    - 10.5.0.2
    - 2001:db8::2
serial: ab12
issuer: O=talos
issuerFingerprint: ff00
notBefore: "2026-03-04T12:00:00Z"
notAfter: "2026-03-05T12:00:00Z"
renewAt: "2026-03-05T04:00:00Z"
trusted: true
state: valid
lastError: boom
issuerShortFingerprint: ff00
`,
			proto: "0a026f731209434e3d6e6f64652d311a066e6f64652d31220831302e352e302e32220b323030313a6462383a3a322a046162313232074f3d74616c6f733a04666630304214323032362d30332d30345431323a30303a30305a4a14323032362d30332d30355431323a30303a30305a5214323032362d30332d30355430343a30303a30305a5801620576616c69646a04626f6f6d" + "720466663030",
		},
		{
			res: pending,
			yaml: `root: etcd
subject: ""
serial: ""
issuer: ""
issuerFingerprint: ""
notBefore: ""
notAfter: ""
renewAt: ""
trusted: false
state: pending
lastError: no key
issuerShortFingerprint: ""
`,
		},
		{
			res: crt,
			yaml: `root: os
certificate: C
key: K
caBundle: B
issuerFingerprint: ff
request: d
renewAt: "2026-03-05T04:00:00Z"
`,
			proto: "0a026f731201431a014b2201422a0266663201643a14323032362d30332d30355430343a30303a30305a",
		},
		{res: sans, yaml: "ips:\n    - 10.5.0.2\n    - 2001:db8::2\ndnsNames:\n    - a\n"},
		{res: emptySANs, yaml: "ips: []\ndnsNames: []\n"},
	} {
		t.Run(resource.String(tc.res), func(t *testing.T) {
			t.Parallel()

			out, err := yaml.Marshal(tc.res.Spec())
			require.NoError(t, err)
			assert.Equal(t, tc.yaml, string(out))

			p, err := protobuf.FromResource(tc.res)
			require.NoError(t, err)

			msg, err := p.Marshal()
			require.NoError(t, err)

			if tc.proto != "" {
				assert.Equal(t, tc.proto, hex.EncodeToString(msg.GetSpec().GetProtoSpec()))
			}

			back, err := protobuf.Unmarshal(msg)
			require.NoError(t, err)

			typed, err := protobuf.UnmarshalResource(back)
			require.NoError(t, err)
			// Compared by rendering: the round trip may turn an empty list into nil.
			roundTripped, err := yaml.Marshal(typed.Spec())
			require.NoError(t, err)
			assert.Equal(t, tc.yaml, string(roundTripped), "protobuf round trip changed %s", resource.String(tc.res))
		})
	}
}

func TestTimeZeroAndParse(t *testing.T) {
	t.Parallel()

	zero, err := pki.ParseTime("")
	require.NoError(t, err)
	assert.True(t, zero.IsZero())

	_, err = pki.ParseTime("yesterday")
	require.ErrorContains(t, err, "not an RFC 3339 time")

	local := time.Date(2026, 3, 4, 13, 0, 0, 500, time.FixedZone("CET", 3600))
	assert.Equal(t, mustTime(t, "2026-03-04T12:00:00Z"), pki.NewTime(local), "UTC, whole seconds")
}

// TestDeepCopy mutates every slice of a copy and checks that the original is untouched.
func TestDeepCopy(t *testing.T) {
	t.Parallel()

	status := pki.CertificateStatusSpec{DNSNames: []string{"a"}, IPAddresses: []string{"10.0.0.1"}}
	statusCopy := status.DeepCopy()
	statusCopy.DNSNames[0], statusCopy.IPAddresses[0] = "x", "x"
	assert.Equal(t, pki.CertificateStatusSpec{DNSNames: []string{"a"}, IPAddresses: []string{"10.0.0.1"}}, status)

	addr := netip.MustParseAddr("10.0.0.1")
	sans := pki.CertSANSpec{IPs: []netip.Addr{addr}, DNSNames: []string{"a"}}
	sansCopy := sans.DeepCopy()
	sansCopy.IPs[0], sansCopy.DNSNames[0] = netip.IPv6Loopback(), "x"
	assert.Equal(t, pki.CertSANSpec{IPs: []netip.Addr{addr}, DNSNames: []string{"a"}}, sans)

	request := pki.CertificateRequestSpec{
		Organization: []string{"o"}, DNSNames: []string{"d"}, IPAddresses: []netip.Addr{addr},
		KeyUsage: []string{"k"}, ExtKeyUsage: []string{"e"}, TrustdEndpoints: []string{"t"},
	}
	want := request.DeepCopy()
	requestCopy := request.DeepCopy()
	requestCopy.Organization[0], requestCopy.DNSNames[0], requestCopy.IPAddresses[0] = "x", "x", netip.IPv6Loopback()
	requestCopy.KeyUsage[0], requestCopy.ExtKeyUsage[0], requestCopy.TrustdEndpoints[0] = "x", "x", "x"
	assert.Equal(t, want, request)

	accepted := pki.AcceptedCASpec{Certificates: []string{"c"}, Fingerprints: []string{"f"}, PublicKeys: []string{"p"}}
	acceptedCopy := accepted.DeepCopy()
	acceptedCopy.Certificates[0], acceptedCopy.Fingerprints[0], acceptedCopy.PublicKeys[0] = "x", "x", "x"
	assert.Equal(t, pki.AcceptedCASpec{Certificates: []string{"c"}, Fingerprints: []string{"f"}, PublicKeys: []string{"p"}}, accepted)

	root := pki.RootSecretSpec{Tokens: []string{"t"}}
	rootCopy := root.DeepCopy()
	rootCopy.Tokens[0] = "x"
	assert.Equal(t, pki.RootSecretSpec{Tokens: []string{"t"}}, root)
}

// FuzzParseTime: any text either parses into a Time whose text parses back to the same Time, or
// is refused; nothing panics.
func FuzzParseTime(f *testing.F) {
	for _, seed := range []string{"", "2026-03-04T12:00:00Z", "2026-03-04T13:00:00+01:00", "yesterday", "2026-13-40T99:99:99Z"} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, s string) {
		parsed, err := pki.ParseTime(s)
		if err != nil {
			return
		}

		again, err := pki.ParseTime(parsed.String())
		require.NoError(t, err)
		assert.Equal(t, parsed, again)

		var fromBinary pki.Time
		require.NoError(t, fromBinary.UnmarshalBinary([]byte(parsed.String())))
		assert.Equal(t, parsed, fromBinary)
	})
}
