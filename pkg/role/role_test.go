package role_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/role"
)

func TestCheck(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name  string
		roles []string
		want  []string
		err   string
	}{
		{"sorted and deduplicated", []string{" os:reader", "os:admin", "os:reader"}, []string{"os:admin", "os:reader"}, ""},
		{"none", nil, nil, "no roles given"},
		{"unknown", []string{"os:admin", "root"}, nil, `unknown role "root"`},
		{"impersonator is not issued", []string{role.Impersonator}, nil, `unknown role "os:impersonator"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := role.Check(tc.roles)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)

				return
			}

			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
