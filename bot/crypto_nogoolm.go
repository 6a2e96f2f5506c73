//go:build !goolm

package bot

import "context"

// encryptionBuilt says whether this build has end-to-end encryption.
const encryptionBuilt = false

// startEncryption leaves the bot without end-to-end encryption: this build has none (mautrix's crypto needs either
// libolm through cgo or, with -tags goolm, its pure-Go implementation). Encrypted messages get a notice saying so.
func (b *Bot) startEncryption(context.Context) error {
	b.Log.Warn().Msg("caseroom was built without end-to-end encryption (build with -tags goolm): " +
		"messages in encrypted rooms will be answered with a notice that they cannot be read")
	return nil
}
