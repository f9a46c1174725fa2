package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/onionpod/onionpod/cmd/internal/api"
	"github.com/onionpod/onionpod/internal/errkind"
)

func newImageCmd(env *Env) *cobra.Command {
	cmd := groupCmd(&cobra.Command{
		Use:   "image",
		Short: "The box's image store: list the images, remove those no app uses, load one",
		Long: `The daemon keeps every image an app was run with (pulled from a registry, or sent from an
archive or layout) unpacked in its image store. Removing an app removes the images no app uses
any more; "image prune" does the same at any time.`,
	})
	cmd.AddCommand(newImageLsCmd(env), newImagePruneCmd(env), newImageLoadCmd(env))
	return cmd
}

// imagesClient is the part of the LocalAPI the image commands use.
type imagesClient interface {
	Images(ctx context.Context) ([]api.Image, error)
	PruneImages(ctx context.Context) (api.PruneReport, error)
}

type imageLsOptions struct {
	IO
	Ctx    context.Context
	Client func() (imagesClient, error)

	JSON bool
}

func newImageLsCmd(env *Env) *cobra.Command {
	opts := imageLsOptions{IO: env.IO, Client: daemonClient[imagesClient](env)}
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the images in the box's image store, with their size and the apps using them",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runImageLs(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

func runImageLs(opts *imageLsOptions) error {
	client, err := opts.Client()
	if err != nil {
		return err
	}
	images, err := client.Images(opts.Ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		if images == nil {
			images = []api.Image{}
		}
		return writeJSON(opts.Out, images)
	}
	if len(images) == 0 {
		_, err := fmt.Fprintln(opts.Out, "No images yet.")
		return err
	}
	tw := newTable(opts.Out)
	fmt.Fprintln(tw, "IMAGE\tSIZE\tAPPS\tREFERENCES")
	for _, img := range images {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", shortID(img.ID), humanBytes(img.Size),
			orDash(strings.Join(img.Apps, ",")), orDash(strings.Join(img.Refs, " ")))
	}
	return tw.Flush()
}

type imagePruneOptions struct {
	IO
	Ctx    context.Context
	Client func() (imagesClient, error)

	JSON bool
}

func newImagePruneCmd(env *Env) *cobra.Command {
	opts := imagePruneOptions{IO: env.IO, Client: daemonClient[imagesClient](env)}
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove the images no app uses (an app's held record counts; so does an image just sent)",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx = cmd.Context()
			return runImagePrune(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

func runImagePrune(opts *imagePruneOptions) error {
	client, err := opts.Client()
	if err != nil {
		return err
	}
	report, err := client.PruneImages(opts.Ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		if report.Images == nil {
			report.Images = []string{}
		}
		return writeJSON(opts.Out, report)
	}
	w := opts.Out
	if len(report.Images) == 0 && report.Layers == 0 && report.Bytes == 0 {
		_, err := fmt.Fprintln(w, "Nothing to remove: every image is in use.")
		return err
	}
	fmt.Fprintf(w, "removed %d image(s) and %d layer(s), %s freed\n", len(report.Images), report.Layers, humanBytes(report.Bytes))
	for _, id := range report.Images {
		fmt.Fprintf(w, "  %s\n", shortID(id))
	}
	return nil
}

type imageLoadOptions struct {
	IO
	Ctx    context.Context
	Client func() (imageSender, error)

	Path string
	JSON bool
}

func newImageLoadCmd(env *Env) *cobra.Command {
	opts := imageLoadOptions{IO: env.IO, Client: daemonClient[imageSender](env)}
	cmd := &cobra.Command{
		Use:   "load FILE|DIR",
		Short: "Send a local image (docker/OCI archive or OCI layout) to the box's image store",
		Long: `Send a local image to the daemon, which loads it into its image store and says its ID. The file
is read by this command, as the user who runs it. An app restored from a backup that runs an image
sent from an archive needs that image on the box first: load it, then restore.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Ctx, opts.Path = cmd.Context(), args[0]
			return runImageLoad(&opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print JSON")
	return cmd
}

func runImageLoad(opts *imageLoadOptions) error {
	path, local, err := imageRef(opts.Path)
	if err != nil {
		return err
	}
	if !local {
		return errkind.BadInputf("image load %s: not a local archive or layout (a registry image is pulled by the daemon when an app names it)", opts.Path)
	}
	client, err := opts.Client()
	if err != nil {
		return err
	}
	info, err := sendImage(opts.Ctx, client, path)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.Out, info)
	}
	ref := ""
	if info.Ref != "" {
		ref = " (" + info.Ref + ")"
	}
	_, err = fmt.Fprintf(opts.Out, "loaded %s%s\n", info.ID, ref)
	return err
}
