package rotate

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client"
	etcdpkg "github.com/nodepki/nodepki/pkg/etcd"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/etcd"
)

// etcdProbeTimeout bounds one direct call to an etcd member.
const etcdProbeTimeout = 3 * time.Second

// EtcdMember is what a control plane reports about the etcd member it runs.
type EtcdMember struct {
	Status etcd.MemberStatusSpec
	Files  etcd.PKIFilesSpec
}

// EtcdCluster is implemented by a Cluster whose control planes may run etcd (NodeAPI does):
// the etcd root's steps then also wait for the members and check them with an etcd client.
type EtcdCluster interface {
	// EtcdMember reads the node's etcd member status and PKI files; nil when it runs no etcd.
	EtcdMember(ctx context.Context, node string) (*EtcdMember, error)
	// EtcdProbe makes one call to the node's etcd member (https://node:2379) with the client
	// credentials, over a new connection.
	EtcdProbe(ctx context.Context, node string, creds EtcdCredentials) error
}

// EtcdCredentials are the files an outside etcd client uses: the CAs it trusts and its key pair.
type EtcdCredentials struct {
	CA, Crt, Key []byte
}

// etcdCluster is the cluster's etcd side, or nil when it has none or etcd is not rotated.
func (r *rotation) etcdCluster() EtcdCluster {
	if r.plan.Roots.Etcd == nil {
		return nil
	}

	ec, _ := r.cl.(EtcdCluster)

	return ec
}

// etcdClientCredentials issues an etcd client certificate of the CA (nil without its key), trusting roots.
func etcdClientCredentials(ca Material, roots ...[]byte) (*EtcdCredentials, error) {
	if len(ca.Key) == 0 {
		return nil, nil
	}

	loaded, err := certs.LoadCA(ca.Crt, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("error loading the etcd CA: %w", err)
	}

	crt, key, err := loaded.Issue(certs.Profile{
		CommonName:  "nodepki-rotate-ca",
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Lifetime:    certs.ClientLifetime,
	}, time.Now())
	if err != nil {
		return nil, fmt.Errorf("error issuing an etcd client certificate: %w", err)
	}

	var bundle []byte
	for _, root := range roots {
		bundle = append(bundle, root...)
	}

	return &EtcdCredentials{CA: bundle, Crt: crt, Key: key}, nil
}

// etcdPhase is what checkEtcd expects of a member.
type etcdPhase int

const (
	etcdAccepted etcdPhase = iota
	etcdSwitched
	etcdRetired
)

// checkEtcd checks the etcd member of a control plane at a step: healthy, running with the trust
// bundle its files hold (so restarted after a trust change), the files trusting and issued by the
// CAs of the step, and, with an etcd client of the new CA, answering (trusting the new CA only
// once switched); once retired a client certificate of the old CA is refused. A node without
// etcd passes.
func (r *rotation) checkEtcd(ctx context.Context, n *node, phase etcdPhase) (string, error) {
	ec := r.etcdCluster()
	if ec == nil || !n.controlPlane {
		return "", nil
	}

	member, err := ec.EtcdMember(ctx, n.name)
	if err != nil || member == nil {
		return "", err
	}

	rp := r.plan.Roots.Etcd
	files, st := member.Files, member.Status

	switch {
	case !slices.Contains(files.TrustedFingerprints, rp.New.Fingerprint):
		return "", errors.New("etcd: the PKI files do not trust the new etcd CA yet")
	case phase == etcdRetired && slices.Contains(files.TrustedFingerprints, rp.Old.Fingerprint):
		return "", errors.New("etcd: the PKI files still trust the old etcd CA")
	case phase >= etcdSwitched && files.IssuerFingerprint != rp.New.Fingerprint:
		return "", errors.New("etcd: the PKI files do not hold key pairs of the new etcd CA yet")
	case st.TrustBundleDigest != files.TrustBundleDigest:
		return "", fmt.Errorf("etcd: member not restarted with the new trust bundle yet (%s)", st.LastError)
	case !st.Healthy:
		return "", fmt.Errorf("etcd: member is %s: %s", st.State, st.LastError)
	}

	roots := [][]byte{rp.New.Crt}
	if phase == etcdAccepted {
		roots = append(roots, rp.Old.Crt)
	}

	creds, err := etcdClientCredentials(rp.New, roots...)
	if err != nil {
		return "", err
	}

	if err = ec.EtcdProbe(ctx, n.name, *creds); err != nil {
		return "", fmt.Errorf("etcd: a client of the new etcd CA is refused: %w", err)
	}

	detail := fmt.Sprintf("etcd member %s healthy (pid %d, %d restarts), new CA client accepted", st.MemberID, st.PID, st.Restarts)

	if phase != etcdRetired {
		return detail, nil
	}

	old, err := etcdClientCredentials(rp.Old, rp.New.Crt)
	if err != nil || old == nil {
		return detail, err
	}

	if err = ec.EtcdProbe(ctx, n.name, *old); err == nil {
		return "", errors.New("etcd: a client certificate of the old etcd CA is still accepted")
	}

	return detail + ", old CA client refused", nil
}

// writeEtcdClientDir keeps --etcd-client-dir in step: ca.crt, client.crt and client.key, each
// written atomically (0600), all or none.
func (r *rotation) writeEtcdClientDir(what string, roots ...[]byte) error {
	if r.opts.EtcdClientDir == "" || r.plan.Roots.Etcd == nil {
		return nil
	}

	creds, err := etcdClientCredentials(r.plan.Roots.Etcd.New, roots...)
	if err != nil {
		return err
	}

	if creds == nil {
		return errors.New("--etcd-client-dir: the plan has no key of the new etcd CA")
	}

	dir := r.opts.EtcdClientDir

	if err = os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("error creating --etcd-client-dir: %w", err)
	}

	if err = atomicfile.WriteFiles(
		[]string{filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")},
		[][]byte{creds.CA, creds.Crt, creds.Key},
	); err != nil {
		return fmt.Errorf("error writing --etcd-client-dir: %w", err)
	}

	r.out.printf("  etcd client credentials in %s: %s\n", dir, what)

	return nil
}

// EtcdMember implements EtcdCluster.
func (a *NodeAPI) EtcdMember(ctx context.Context, node string) (*EtcdMember, error) {
	var member *EtcdMember

	err := a.do(func(c *client.Client) error {
		callCtx := client.WithNode(ctx, node)

		st, err := safe.StateGetByID[*etcd.MemberStatus](callCtx, c.COSI(), etcd.LocalMemberID)
		if state.IsNotFoundError(err) || status.Code(err) == codes.PermissionDenied {
			// No member, or a node of a version without etcd.
			return nil
		}

		if err != nil {
			return err
		}

		files, err := safe.StateGetByID[*etcd.PKIFiles](callCtx, c.COSI(), etcd.PKIFilesID)
		if err != nil {
			return err
		}

		member = &EtcdMember{Status: *st.TypedSpec(), Files: *files.TypedSpec()}

		return nil
	})

	return member, err
}

// EtcdProbe implements EtcdCluster: a status call, which needs a connection the member accepts.
func (a *NodeAPI) EtcdProbe(ctx context.Context, node string, creds EtcdCredentials) error {
	addr, err := client.ParseEndpoint(node)
	if err != nil {
		return err
	}

	tlsConfig, err := etcdpkg.TLSConfig(creds.CA, creds.Crt, creds.Key)
	if err != nil {
		return err
	}

	endpoint := "https://" + net.JoinHostPort(addr.Host, strconv.Itoa(etcdpkg.ClientPort))

	etcdClient, err := etcdpkg.NewClient([]string{endpoint}, tlsConfig)
	if err != nil {
		return err
	}

	defer etcdClient.Close()

	return etcdpkg.Status(ctx, etcdClient, endpoint, etcdProbeTimeout).Err
}

// etcdRoots are the CAs an outside etcd client trusts: the new one, and the old one too while
// members may still serve with it.
func (r *rotation) etcdRoots(transitional bool) [][]byte {
	if r.plan.Roots.Etcd == nil {
		return nil
	}

	roots := [][]byte{r.plan.Roots.Etcd.New.Crt}
	if transitional {
		roots = append(roots, r.plan.Roots.Etcd.Old.Crt)
	}

	return roots
}

// joinDetails joins a check's detail with the detail of a further check, or returns its error.
func joinDetails(detail string, more string, err error) (string, error) {
	switch {
	case err != nil:
		return "", err
	case detail == "":
		return more, nil
	case more == "":
		return detail, nil
	default:
		return detail + "; " + more, nil
	}
}

// etcdMembers are the control planes in the etcd cluster of the node, which knows its own
// member only: every started etcd member is named by its node address. A node that runs no etcd
// yields none.
func etcdMembers(ctx context.Context, c *client.Client, known []Member) []Member {
	list, err := c.Etcd().MemberList(ctx, &nodeapi.EtcdMemberListRequest{})
	if err != nil {
		return nil
	}

	var out []Member

	for _, m := range list.GetMembers() {
		if _, err = netip.ParseAddr(m.GetName()); err != nil {
			continue
		}

		if slices.ContainsFunc(known, func(k Member) bool { return k.Address == m.GetName() }) {
			continue
		}

		// A member is as fresh as the etcd cluster says it is now.
		out = append(out, Member{Address: m.GetName(), MachineType: machineconfig.TypeControlPlane, LastSeen: time.Now()})
	}

	return out
}
