package source

// The sidecar's permissions on the API server, next to the code that reads:
// `make manifests` writes them with controller-gen to
// config/rbac/sidecar/role.yaml and copies that file into the chart
// (charts/gatehouse/files/sidecar-role.yaml), and the tests bind exactly
// those rules (test/sidecarrbac). Read-only, and no Secrets: delivered API
// keys and private signing keys live there.
//
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.gatehouse.dev,resources=apikeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.gatehouse.dev,resources=authpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=auth.gatehouse.dev,resources=signingkeys,verbs=get;list;watch
