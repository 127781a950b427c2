package pki

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

func TestAcceptedCAsRejectsBadEntries(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name    string
		doc     *machineconfig.Document
		wantErr string
	}{
		{
			name: "accepted CA that is not PEM",
			doc: &machineconfig.Document{Machine: &machineconfig.MachineSection{
				AcceptedCAs: []*machineconfig.Certificate{{Crt: []byte("not a certificate")}},
			}},
			wantErr: "machine.acceptedCAs[0].crt: not PEM",
		},
		{
			name: "issuing CA that is not PEM",
			doc: &machineconfig.Document{Cluster: &machineconfig.ClusterSection{
				Etcd: &machineconfig.Etcd{CA: &machineconfig.CertificateAndKey{Crt: []byte("garbage")}},
			}},
			wantErr: "cluster.etcd.ca.crt: not PEM",
		},
		{
			name: "accepted service-account key that is not a key",
			doc: &machineconfig.Document{Cluster: &machineconfig.ClusterSection{
				AcceptedServiceAccountKeys: []*machineconfig.Key{{Key: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")}},
			}},
			wantErr: `cluster.acceptedServiceAccountKeys[0].key: PEM block is "CERTIFICATE", want a private key`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			_, err := acceptedCAs(tc.doc, &parsedPEM{})
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}
