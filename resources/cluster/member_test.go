package cluster_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/nodepki/nodepki/resources/cluster"
)

func TestFreshLastSeen(t *testing.T) {
	t.Parallel()

	now := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	recorded := cluster.MemberSpec{
		Addresses:   []string{"10.5.0.3", "fd00::3"},
		Hostname:    "worker-1",
		MachineType: "worker",
		LastSeen:    "2026-03-04T11:30:00Z",
	}

	for _, tc := range []struct {
		name     string
		lastSeen string
		want     func(*cluster.MemberSpec)
		interval time.Duration
		fresh    bool
	}{
		{name: "same member seen within the interval", interval: time.Hour, fresh: true},
		{name: "same member seen longer ago than the interval", interval: 30 * time.Minute},
		{name: "lastSeen in the future", lastSeen: "2026-03-04T12:00:01Z", interval: time.Hour},
		{name: "lastSeen unreadable", lastSeen: "yesterday", interval: time.Hour},
		{name: "addresses changed", want: func(s *cluster.MemberSpec) { s.Addresses = []string{"10.5.0.3"} }, interval: time.Hour},
		{name: "addresses reordered", want: func(s *cluster.MemberSpec) { s.Addresses = []string{"fd00::3", "10.5.0.3"} }, interval: time.Hour},
		{name: "hostname changed", want: func(s *cluster.MemberSpec) { s.Hostname = "worker-2" }, interval: time.Hour},
		{name: "machine type changed", want: func(s *cluster.MemberSpec) { s.MachineType = "controlplane" }, interval: time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			existing := recorded.DeepCopy()
			if tc.lastSeen != "" {
				existing.LastSeen = tc.lastSeen
			}

			want := recorded.DeepCopy()
			want.LastSeen = ""

			if tc.want != nil {
				tc.want(&want)
			}

			lastSeen, fresh := existing.FreshLastSeen(want, now, tc.interval)
			assert.Equal(t, tc.fresh, fresh)

			if fresh {
				assert.Equal(t, now.Add(-30*time.Minute), lastSeen)
			}
		})
	}
}
