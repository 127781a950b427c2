package kubernetes

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// APIServerStatusType is the type of the APIServerStatus resource.
const APIServerStatusType = resource.Type("APIServerStatuses.kubernetes.nodepki.dev")

// kube-apiserver states.
const (
	// StateWaiting: kube-apiserver is not started yet: its files or the node's etcd member are not ready.
	StateWaiting = "waiting"
	// StateStarting: the process runs and /readyz has not answered ok yet.
	StateStarting = "starting"
	// StateRunning: the process runs and /readyz answers ok.
	StateRunning = "running"
	// StateRestarting: kube-apiserver is being restarted to load files it reads only at start.
	StateRestarting = "restarting"
	// StateFailed: the process exited or could not be started; it is retried with backoff.
	StateFailed = "failed"
)

// APIServerStatus is the state of the kube-apiserver this control plane supervises (ID
// APIServerStatusID); nodepkid runs one with --kube-apiserver-binary.
type APIServerStatus = typed.Resource[APIServerStatusSpec, APIServerStatusExtension]

// APIServerStatusSpec describes the kube-apiserver. It changes when its state does, never on a
// periodic check that finds nothing new.
type APIServerStatusSpec struct {
	State   string `yaml:"state" protobuf:"1"`
	Running bool   `yaml:"running" protobuf:"2"`
	// Ready is whether /readyz answered ok at the last probe.
	Ready bool `yaml:"ready" protobuf:"3"`
	PID   int  `yaml:"pid" protobuf:"4"`
	// URL is where kube-apiserver serves (https://<node address>:6443).
	URL string `yaml:"url" protobuf:"5"`
	// StartupDigest is the APIServerFiles StartupDigest of the files the running process loaded:
	// when the files' digest differs, a restart is due.
	StartupDigest string `yaml:"startupDigest" protobuf:"6"`
	// Restarts counts the starts after the first one, by crash or by changed startup files.
	Restarts int `yaml:"restarts" protobuf:"7"`
	// LastError is why kube-apiserver is not running or not ready, or why a due restart waits;
	// empty when there is nothing to say.
	LastError string `yaml:"lastError,omitempty" protobuf:"8"`
}

// NewAPIServerStatus initializes an APIServerStatus resource.
func NewAPIServerStatus(id resource.ID) *APIServerStatus {
	return typed.NewResource[APIServerStatusSpec, APIServerStatusExtension](
		resource.NewMetadata(NamespaceName, APIServerStatusType, id, resource.VersionUndefined),
		APIServerStatusSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s APIServerStatusSpec) DeepCopy() APIServerStatusSpec {
	return s
}

// APIServerStatusExtension provides auxiliary methods for APIServerStatus.
type APIServerStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (APIServerStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             APIServerStatusType,
		DefaultNamespace: NamespaceName,
		PrintColumns: []meta.PrintColumn{
			{Name: "State", JSONPath: "{.state}"},
			{Name: "Ready", JSONPath: "{.ready}"},
			{Name: "PID", JSONPath: "{.pid}"},
			{Name: "URL", JSONPath: "{.url}"},
			{Name: "Restarts", JSONPath: "{.restarts}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[APIServerStatusSpec](APIServerStatusType, &APIServerStatus{}))
}
