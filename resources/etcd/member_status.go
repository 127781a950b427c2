package etcd

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// MemberStatusType is the type of the MemberStatus resource.
const MemberStatusType = resource.Type("MemberStatuses.etcd.nodepki.dev")

// Member states.
const (
	// StateWaitingBootstrap: no data and no cluster to join yet (`nodepkictl bootstrap` starts one).
	StateWaitingBootstrap = "waiting-bootstrap"
	// StateStarting: the process runs and has not answered a health check yet.
	StateStarting = "starting"
	// StateRunning: the process runs and the member answered a health check.
	StateRunning = "running"
	// StateRestarting: the member is being restarted to load a new trust bundle.
	StateRestarting = "restarting"
	// StateFailed: the process exited or could not be started; it is retried with backoff.
	StateFailed = "failed"
)

// MemberStatus is the state of the etcd member this node supervises (ID LocalMemberID).
type MemberStatus = typed.Resource[MemberStatusSpec, MemberStatusExtension]

// MemberStatusSpec describes the member. It changes when the member's state does, never on a
// periodic check that finds nothing new.
type MemberStatusSpec struct {
	State   string `yaml:"state" protobuf:"1"`
	Running bool   `yaml:"running" protobuf:"2"`
	Healthy bool   `yaml:"healthy" protobuf:"3"`
	PID     int    `yaml:"pid" protobuf:"4"`
	// MemberID and LeaderID are etcd member IDs in hex.
	MemberID string `yaml:"memberID" protobuf:"5"`
	LeaderID string `yaml:"leaderID" protobuf:"6"`
	// Name is the member's etcd name (the node address).
	Name string `yaml:"name" protobuf:"7"`
	// TrustBundleDigest is the digest of the ca.crt the running process loaded.
	TrustBundleDigest string `yaml:"trustBundleDigest" protobuf:"8"`
	// Restarts counts the starts after the first one, by crash or trust change.
	Restarts int `yaml:"restarts" protobuf:"9"`
	// LastError is why the member is not running or not healthy; empty when it is.
	LastError string `yaml:"lastError,omitempty" protobuf:"10"`
}

// NewMemberStatus initializes a MemberStatus resource.
func NewMemberStatus(id resource.ID) *MemberStatus {
	return typed.NewResource[MemberStatusSpec, MemberStatusExtension](
		resource.NewMetadata(NamespaceName, MemberStatusType, id, resource.VersionUndefined),
		MemberStatusSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s MemberStatusSpec) DeepCopy() MemberStatusSpec {
	return s
}

// MemberStatusExtension provides auxiliary methods for MemberStatus.
type MemberStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (MemberStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             MemberStatusType,
		DefaultNamespace: NamespaceName,
		PrintColumns: []meta.PrintColumn{
			{Name: "State", JSONPath: "{.state}"},
			{Name: "Healthy", JSONPath: "{.healthy}"},
			{Name: "PID", JSONPath: "{.pid}"},
			{Name: "Member", JSONPath: "{.memberID}"},
			{Name: "Leader", JSONPath: "{.leaderID}"},
			{Name: "Trust-Bundle", JSONPath: "{.trustBundleDigest}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[MemberStatusSpec](MemberStatusType, &MemberStatus{}))
}
