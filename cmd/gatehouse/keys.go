package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	gatehousev1 "gatehouse.dev/gatehouse/api/v1"
	"gatehouse.dev/gatehouse/internal/apikeyformat"
)

func newKeysCommand() *cobra.Command {
	keys := &cobra.Command{
		Use:   "keys",
		Short: "Offline key tools: mint an API key, inspect a JWKS",
	}
	keys.AddCommand(newMintCommand(rand.Reader))
	return keys
}

// mintOptions are the flags of `keys mint`.
type mintOptions struct {
	name      string
	namespace string
	subject   string
	scopes    []string
	expiresAt string
	keyFile   string
}

func newMintCommand(entropy io.Reader) *cobra.Command {
	o := &mintOptions{}
	cmd := &cobra.Command{
		Use:   "mint --name NAME --subject SUBJECT [flags]",
		Short: "Generate an API key locally and print an APIKey manifest holding only its hash",
		Long: `Generate an API key on this machine, off-cluster, and print an APIKey
manifest that carries only the key's ID and SHA-256 hash (spec.hash): the
plaintext never enters the cluster.

The key is shown once, on standard error (or written to --key-file with mode
0600); the manifest goes to standard output, so that it can be piped:

  gatehouse keys mint --name billing --subject service:billing \
      --scope orders:read --key-file billing.key | kubectl apply -n shop -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMint(o, entropy, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "Name of the APIKey resource (required).")
	f.StringVarP(&o.namespace, "namespace", "n", "", "Namespace of the APIKey (default: left to kubectl).")
	f.StringVar(&o.subject, "subject", "", "Identity the key authenticates, e.g. service:billing (required).")
	f.StringArrayVar(&o.scopes, "scope", nil, "A scope granted to the key; repeat for several.")
	f.StringVar(&o.expiresAt, "expires-at", "", "When the key stops being accepted (RFC 3339); unset: never.")
	f.StringVar(&o.keyFile, "key-file", "", "Write the key to this new file (mode 0600) instead of showing it.")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("subject")
	return cmd
}

// mintManifest is the APIKey as printed: only the fields a user sets.
type mintManifest struct {
	APIVersion string                 `json:"apiVersion"`
	Kind       string                 `json:"kind"`
	Metadata   mintMetadata           `json:"metadata"`
	Spec       gatehousev1.APIKeySpec `json:"spec"`
}

type mintMetadata struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

func runMint(o *mintOptions, entropy io.Reader, stdout, stderr io.Writer) error {
	if errs := validation.IsDNS1123Subdomain(o.name); len(errs) > 0 {
		return fmt.Errorf("invalid --name %q: %s", o.name, errs[0])
	}
	if o.subject == "" {
		return errors.New("--subject must not be empty")
	}
	spec := gatehousev1.APIKeySpec{Subject: o.subject, Scopes: o.scopes}
	if o.expiresAt != "" {
		t, err := time.Parse(time.RFC3339, o.expiresAt)
		if err != nil {
			return fmt.Errorf("invalid --expires-at: %w", err)
		}
		spec.ExpiresAt = &metav1.Time{Time: t.UTC()}
	}

	key, err := apikeyformat.Generate(entropy)
	if err != nil {
		return fmt.Errorf("generating key: %w", err)
	}
	spec.Hash = &gatehousev1.APIKeyHash{KeyID: key.ID(), SHA256: key.Hash()}
	doc, err := yaml.Marshal(mintManifest{
		APIVersion: gatehousev1.GroupVersion.String(),
		Kind:       "APIKey",
		Metadata:   mintMetadata{Name: o.name, Namespace: o.namespace},
		Spec:       spec,
	})
	if err != nil {
		return fmt.Errorf("encoding manifest: %w", err)
	}

	if o.keyFile != "" {
		// O_EXCL: never overwrite (and so never lose) an existing key.
		f, err := os.OpenFile(o.keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("creating key file: %w", err)
		}
		if _, err := fmt.Fprintln(f, key.Plaintext()); err != nil {
			_ = f.Close()
			return fmt.Errorf("writing key file: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("writing key file: %w", err)
		}
		fmt.Fprintf(stderr, "Key %s written to %s.\n", key.ID(), o.keyFile)
	} else {
		fmt.Fprintf(stderr, "API key (shown only now; store it in your secret manager):\n\n  %s\n\n", key.Plaintext())
	}
	fmt.Fprintf(stderr, "Key ID:  %s\nSHA-256: %s\n", key.ID(), key.Hash())
	_, err = stdout.Write(doc)
	return err
}
