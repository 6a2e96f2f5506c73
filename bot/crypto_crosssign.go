//go:build goolm

package bot

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// unverifiedDeviceWarning says what to do when the bot's device cannot be cross-signed.
const unverifiedDeviceWarning = "The bot's device is not cross-signed: encryption works, but clients will show it as " +
	"unverified. Set encryption.bot_password (the bot account's password; Dendrite asks for it to upload cross-signing " +
	"keys) or encryption.recovery_key (of the bot's existing cross-signing keys) and restart"

// crossSigningStatus is what the homeserver says about the bot's cross-signing keys and device.
type crossSigningStatus struct {
	hasKeys      bool // the bot user has a master and a self-signing key
	deviceSigned bool // the bot's device is signed by that self-signing key
}

// ensureCrossSigned makes sure the bot's device is signed by the bot's self-signing key, so that users see it as
// the bot's own device. A device that already is (any restart) is left alone. A new device of a bot that has
// cross-signing keys is signed with them, unlocked by the recovery key (the one caseroom stored when it made the keys,
// else encryption.recovery_key). A bot without keys gets new ones, answering the homeserver's password prompt, where
// there is one (Dendrite; not Synapse, MSC3967), with encryption.bot_password; their recovery key is stored sealed in
// the database and never shown. When nothing
// works the bot warns and carries on with an unverified device. Only database errors are returned.
func (d *cryptoDevice) ensureCrossSigned(ctx context.Context, sealedRecoveryKey string) error {
	log := zerolog.Ctx(ctx)
	status, err := d.crossSigningStatus(ctx)
	if err != nil {
		log.Warn().Err(err).Msg("Failed to check whether the bot's device is cross-signed; it may stay unverified")
		return nil
	}
	if status.deviceSigned {
		log.Debug().Msg("The bot's device is cross-signed")
		return nil
	}
	cfg := d.bot.Config.Encryption
	if status.hasKeys {
		var storedKey string
		if sealedRecoveryKey != "" {
			if storedKey, err = d.sealer.open(sealRecoveryKey, sealedRecoveryKey); err != nil {
				log.Warn().Err(err).Msg("Failed to read the stored recovery key")
			}
		}
		for _, rk := range []struct{ source, key string }{{"database", storedKey}, {"config", cfg.RecoveryKey}} {
			if rk.key == "" {
				continue
			}
			if err = d.mach.VerifyWithRecoveryKey(ctx, rk.key); err != nil {
				log.Warn().Err(err).Str("recovery_key_from", rk.source).
					Msg("Failed to cross-sign the bot's device with the recovery key")
				continue
			}
			log.Info().Str("recovery_key_from", rk.source).Msg("Cross-signed the bot's new device with its existing keys")
			return nil
		}
		if cfg.BotPassword == "" || cfg.RecoveryKey != "" {
			// Never replace keys the operator pointed at with encryption.recovery_key.
			log.Warn().Msg(unverifiedDeviceWarning)
			return nil
		}
		log.Warn().Msg("No recovery key unlocks the bot's cross-signing keys; replacing them with new ones. " +
			"Users who verified the bot will have to verify it again")
	}
	// Without keys, a password is not always needed: a first upload of cross-signing keys asks for none on
	// homeservers that follow MSC3967 (Synapse); Dendrite v0.13.8 asks for the bot account's password.
	return d.makeCrossSigningKeys(ctx)
}

// crossSigningStatus asks the homeserver for the bot's cross-signing keys and whether its device is signed.
func (d *cryptoDevice) crossSigningStatus(ctx context.Context) (status crossSigningStatus, err error) {
	userID, deviceID := d.cli.UserID, d.cli.DeviceID
	resp, err := d.cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{userID: {deviceID}}})
	if err != nil {
		return status, fmt.Errorf("failed to query own keys: %w", err)
	}
	master, hasMaster := resp.MasterKeys[userID]
	selfSigning, hasSelfSigning := resp.SelfSigningKeys[userID]
	status.hasKeys = hasMaster && hasSelfSigning && master.FirstKey() != "" && selfSigning.FirstKey() != ""
	if !status.hasKeys {
		return status, nil
	}
	device, ok := resp.DeviceKeys[userID][deviceID]
	sskID := id.NewKeyID(id.KeyAlgorithmEd25519, selfSigning.FirstKey().String())
	status.deviceSigned = ok && device.Signatures[userID][sskID] != ""
	return status, nil
}

// makeCrossSigningKeys makes and publishes new cross-signing keys (answering the homeserver's password prompt with
// encryption.bot_password), keeps them in secret storage on the homeserver under a new recovery key, stores that key
// sealed in the database, and signs the bot's device and master key. The keys are published first, so that a wrong
// password leaves everything as it was.
func (d *cryptoDevice) makeCrossSigningKeys(ctx context.Context) error {
	log := zerolog.Ctx(ctx)
	keys, err := d.mach.GenerateCrossSigningKeys()
	if err != nil {
		log.Warn().Err(err).Msg("Failed to make cross-signing keys. " + unverifiedDeviceWarning)
		return nil
	}
	password := d.bot.Config.Encryption.BotPassword
	err = d.mach.PublishCrossSigningKeys(ctx, keys, func(uia *mautrix.RespUserInteractive) any {
		if password == "" {
			return nil // the homeserver's password prompt stays unanswered: the upload fails as it is
		}
		return &mautrix.ReqUIAuthLogin{
			BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword, Session: uia.Session},
			User:         d.cli.UserID.String(),
			Password:     password,
		}
	})
	if err != nil && password == "" {
		log.Warn().Err(err).Msg("The homeserver asks for the bot account's password to upload cross-signing keys. " +
			unverifiedDeviceWarning)
		return nil
	} else if err != nil {
		log.Warn().Err(err).Msg("Failed to upload cross-signing keys (is encryption.bot_password the bot account's " +
			"password?). " + unverifiedDeviceWarning)
		return nil
	}
	log.Info().Msg("Uploaded new cross-signing keys for the bot")

	ssssKey, err := d.mach.SSSS.GenerateAndUploadKey(ctx, "")
	if err != nil {
		log.Warn().Err(err).Msg("Failed to set up secret storage: the cross-signing keys cannot sign a later device")
	} else if err = d.bot.Store.Device.SetRecoveryKey(ctx, d.cli.UserID, d.sealer.seal(sealRecoveryKey, ssssKey.RecoveryKey())); err != nil {
		return err
	} else if err = d.mach.UploadCrossSigningKeysToSSSS(ctx, ssssKey, keys); err != nil {
		log.Warn().Err(err).Msg("Failed to store the cross-signing keys in secret storage")
	} else if err = d.mach.SSSS.SetDefaultKeyID(ctx, ssssKey.ID); err != nil {
		log.Warn().Err(err).Msg("Failed to mark the secret storage key as default")
	}

	if err = d.mach.SignOwnDevice(ctx, d.mach.OwnIdentity()); err != nil {
		log.Warn().Err(err).Msg("Failed to sign the bot's device with its self-signing key")
		return nil
	}
	if err = d.mach.SignOwnMasterKey(ctx); err != nil {
		log.Warn().Err(err).Msg("Failed to sign the bot's master key with its device")
	}
	log.Info().Msg("Cross-signed the bot's device")
	return nil
}
