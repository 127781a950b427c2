package audit_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/audit"
)

// TestRefusalsAggregatePerPeerAndMinute: a flood of refusals writes the first of each peer at
// once and the rest of the minute as one count, so the lines do not grow with the calls.
func TestRefusalsAggregatePerPeerAndMinute(t *testing.T) {
	t.Parallel()

	c := &clock{now: time.Date(2026, 11, 29, 19, 0, 5, 0, time.UTC)}
	l := openLog(t, t.TempDir(), c, 0, 0)

	for range 1000 {
		require.NoError(t, l.Refused(audit.ServiceAPI, "127.0.130.9", "/m", "not authorized"))
	}

	require.NoError(t, l.Refused(audit.ServiceTrustd, "127.0.130.9", "/t", "invalid join token"))

	events, _ := readAll(t, l, time.Time{})
	require.Len(t, events, 2, "the first refusal of each service and peer, at once")
	assert.Equal(t, 1, events[0].Refusal.Count)
	assert.Equal(t, "not authorized", events[0].Refusal.Reason)

	// Still within the minute: nothing more.
	c.Add(30 * time.Second)
	require.NoError(t, l.FlushRefusals(c.Now()))

	events, _ = readAll(t, l, time.Time{})
	assert.Len(t, events, 2)

	// The minute ended: the other 999 in one line.
	c.Add(30 * time.Second)
	require.NoError(t, l.FlushRefusals(c.Now()))

	events, _ = readAll(t, l, time.Time{})
	require.Len(t, events, 3)
	assert.Equal(t, audit.TypeRefused, events[2].Type)
	assert.Equal(t, 999, events[2].Refusal.Count)
	assert.Equal(t, "127.0.130.9", events[2].Refusal.Peer)
	assert.Equal(t, time.Date(2026, 11, 29, 19, 0, 0, 0, time.UTC), events[2].Refusal.Window)

	// A new minute starts over.
	require.NoError(t, l.Refused(audit.ServiceAPI, "127.0.130.9", "/m", "not authorized"))

	events, _ = readAll(t, l, time.Time{})
	assert.Len(t, events, 4)
}

// TestRefusalsFromManyPeersAreBounded: past the tracked peers, refusals count under "other".
func TestRefusalsFromManyPeersAreBounded(t *testing.T) {
	t.Parallel()

	c := &clock{now: time.Date(2026, 11, 29, 19, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	l := openLog(t, dir, c, 0, 0)

	const peers = 2000

	for i := range peers {
		require.NoError(t, l.Refused(audit.ServiceAPI, fmt.Sprintf("10.0.%d.%d", i/256, i%256), "/m", "no"))
	}

	require.NoError(t, l.Close())

	l = openLog(t, dir, c, 0, 0)
	events, _ := readAll(t, l, time.Time{})

	total := 0
	lines := 0

	for _, e := range events {
		total += e.Refusal.Count
		lines++
	}

	assert.Equal(t, peers, total, "every refusal is counted")
	assert.Less(t, lines, 300, "but the lines are bounded")
	assert.Equal(t, audit.OtherPeers, events[len(events)-1].Refusal.Peer)
}
