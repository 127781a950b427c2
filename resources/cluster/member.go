package cluster

import (
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// MemberType is the type of the Member resource.
const MemberType = resource.Type("Members.cluster.nodepki.dev")

// Member is a node of the cluster as a control plane knows it. Its ID is the node's address: the
// first of its addresses, the one the node API of the node is reached on.
type Member = typed.Resource[MemberSpec, MemberExtension]

// MemberSpec describes a member.
//
// LastSeen (RFC 3339 UTC) changes only when the member registers or renews (a worker at a trustd
// signing, at most once an hour while it is unchanged; a control plane every few hours), never on
// a reconcile, so that an unchanged member writes nothing.
type MemberSpec struct {
	Addresses   []string `yaml:"addresses" protobuf:"1"`
	Hostname    string   `yaml:"hostname" protobuf:"2"`
	MachineType string   `yaml:"machineType" protobuf:"3"`
	LastSeen    string   `yaml:"lastSeen" protobuf:"4"`
}

// NewMember initializes a Member resource.
func NewMember(id resource.ID) *Member {
	return typed.NewResource[MemberSpec, MemberExtension](
		resource.NewMetadata(NamespaceName, MemberType, id, resource.VersionUndefined),
		MemberSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s MemberSpec) DeepCopy() MemberSpec {
	s.Addresses = slices.Clone(s.Addresses)

	return s
}

// FreshLastSeen returns s's lastSeen when s says what want says (lastSeen aside) and was seen
// less than interval before now: rewriting it would only move lastSeen. A lastSeen in the future
// (the clock went back) is not fresh.
func (s *MemberSpec) FreshLastSeen(want MemberSpec, now time.Time, interval time.Duration) (time.Time, bool) {
	if !slices.Equal(s.Addresses, want.Addresses) || s.Hostname != want.Hostname || s.MachineType != want.MachineType {
		return time.Time{}, false
	}

	lastSeen, err := time.Parse(time.RFC3339, s.LastSeen)
	if err != nil {
		return time.Time{}, false
	}

	age := now.Sub(lastSeen)

	return lastSeen, age >= 0 && age < interval
}

// MemberExtension provides auxiliary methods for Member.
type MemberExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (MemberExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             MemberType,
		DefaultNamespace: NamespaceName,
		PrintColumns: []meta.PrintColumn{
			{Name: "Hostname", JSONPath: "{.hostname}"},
			{Name: "Machine-Type", JSONPath: "{.machineType}"},
			{Name: "Addresses", JSONPath: "{.addresses}"},
			{Name: "Last-Seen", JSONPath: "{.lastSeen}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[MemberSpec](MemberType, &Member{}))
}
