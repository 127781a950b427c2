package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// RestartLockKey is the etcd key prefix of the cluster-wide restart lock. Every control-plane
// process whose restart costs the cluster a member (an etcd member, a kube-apiserver) restarts
// only while holding it, so that two are never down at once, whatever kind they are.
const RestartLockKey = "/nodepki/etcd-restart-lock"

// restartLockTTL is how long, in seconds, the lock outlives a supervisor that died holding it.
const restartLockTTL = 5

// ErrRestartLockBusy is returned by LockRestart when another holder kept the lock for the whole wait.
var ErrRestartLockBusy = errors.New("another control plane holds the restart lock")

// RestartLock is the held cluster-wide restart lock.
type RestartLock struct {
	session *concurrency.Session
	mutex   *concurrency.Mutex
}

// LockRestart takes the cluster-wide restart lock through client, waiting at most wait. The
// lock's session is kept alive through client's endpoints: a caller restarting an etcd member
// passes a client of the other members, so that the session survives the restart.
func LockRestart(ctx context.Context, client *clientv3.Client, wait time.Duration) (*RestartLock, error) {
	session, err := concurrency.NewSession(client, concurrency.WithTTL(restartLockTTL), concurrency.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("error opening a restart lock session: %w", err)
	}

	mutex := concurrency.NewMutex(session, RestartLockKey)

	lockCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()

	if err = mutex.Lock(lockCtx); err != nil {
		closeErr := session.Close()

		if lockCtx.Err() != nil && ctx.Err() == nil {
			return nil, errors.Join(ErrRestartLockBusy, closeErr)
		}

		return nil, errors.Join(fmt.Errorf("error taking the restart lock: %w", err), closeErr)
	}

	return &RestartLock{session: session, mutex: mutex}, nil
}

// Unlock releases the lock; if that fails, the lock expires with its session, which is closed.
func (l *RestartLock) Unlock(ctx context.Context, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait)
	defer cancel()

	err := l.mutex.Unlock(ctx)

	return errors.Join(err, l.session.Close())
}
