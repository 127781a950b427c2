package configview

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeMachineConfig(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name string
		raw  string
		want string
		err  string
	}{
		{"single document", "version: v1alpha1\nmachine:\n    type: worker\n", "worker", ""},
		{"other documents first", "apiVersion: v1alpha1\nkind: TrustedRootsConfig\nname: x\n---\nversion: v1alpha1\nmachine:\n    type: controlplane\n", "controlplane", ""},
		{"no v1alpha1 document", "apiVersion: v1alpha1\nkind: TrustedRootsConfig\n", "", "no v1alpha1 document"},
		{"other document that does not fit first", "kind: Other\nmachine: [1, 2]\n---\nversion: v1alpha1\nmachine:\n    type: worker\n", "worker", ""},
		{"v1alpha1 document that does not fit", "version: v1alpha1\nmachine: [1, 2]\n", "", "cannot construct"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			doc, err := Decode([]byte(tc.raw))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)

				return
			}

			require.NoError(t, err)
			assert.Equal(t, tc.want, doc.Machine.Type)
		})
	}
}

// FuzzDecode: any input decodes into a document or is refused with an error; nothing panics, and
// a decoded document is the v1alpha1 one.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		"version: v1alpha1\nmachine:\n    type: worker\n",
		"kind: Other\nmachine: [1, 2]\n---\nversion: v1alpha1\nmachine:\n    type: controlplane\n",
		"version: v1alpha1\nmachine:\n    ca:\n        crt: not base64\n",
		"version: v1alpha1\nmachine:\n    certificateLifetimes:\n        etcd: 30s\n",
		"- a\n- b\n",
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, raw []byte) {
		doc, err := Decode(raw)
		if err != nil {
			return
		}

		assert.Equal(t, documentVersion, doc.Version)
	})
}
