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
