//! [`KeyLifecycle`] as AWS KMS offers it: aliases, enable/disable, automatic rotation
//! (symmetric keys), scheduled deletion with a 7 to 30 day waiting period.

use async_trait::async_trait;
use aws_sdk_kms::types::KeyState as AwsKeyState;
use hsm_core::remote::{Idempotency, all_pages};
use hsm_core::{HsmError, KeyAlias, KeyId, KeyLifecycle, KeyState};

use crate::provider::AwsKmsProvider;

fn state(s: Option<&AwsKeyState>, deletion_at: Option<i64>) -> KeyState {
    match s {
        Some(AwsKeyState::Enabled) => KeyState::Enabled,
        Some(AwsKeyState::Disabled) => KeyState::Disabled,
        Some(AwsKeyState::PendingDeletion | AwsKeyState::PendingReplicaDeletion) => {
            KeyState::PendingDeletion { deletion_at }
        }
        Some(AwsKeyState::PendingImport) => KeyState::PendingImport,
        Some(other) => KeyState::Other(other.as_str().to_owned()),
        None => KeyState::Other("unknown".into()),
    }
}

/// `alias/name`: KMS's form, checked before the call so the error names the rule.
fn alias_name(alias: &str) -> Result<&str, HsmError> {
    match alias.strip_prefix("alias/") {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with("aws/")
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c)) =>
        {
            Ok(alias)
        }
        _ => Err(HsmError::invalid(format!(
            "{alias:?} is not a KMS alias: it must be alias/NAME, with letters, digits, / _ - \
             and not alias/aws/"
        ))),
    }
}

#[async_trait]
impl KeyLifecycle for AwsKmsProvider {
    async fn key_state(&self, key: &KeyId) -> Result<KeyState, HsmError> {
        let what = format!("reading the state of {}", key.display_name());
        let out = self
            .call(&what, Idempotency::Idempotent, || {
                self.client().describe_key().key_id(&key.id).send()
            })
            .await?;
        let m = out
            .key_metadata()
            .ok_or_else(|| HsmError::key_not_found(key.display_name()))?;
        Ok(state(m.key_state(), m.deletion_date().map(|d| d.secs())))
    }

    async fn create_alias(&self, alias: &str, key: &KeyId) -> Result<(), HsmError> {
        let alias = alias_name(alias)?;
        let what = format!("creating alias {alias} for {}", key.display_name());
        self.call(&what, Idempotency::NotIdempotent, || {
            self.client()
                .create_alias()
                .alias_name(alias)
                .target_key_id(&key.id)
                .send()
        })
        .await?;
        Ok(())
    }

    async fn update_alias(&self, alias: &str, key: &KeyId) -> Result<(), HsmError> {
        let alias = alias_name(alias)?;
        let what = format!("pointing alias {alias} at {}", key.display_name());
        self.call(&what, Idempotency::Idempotent, || {
            self.client()
                .update_alias()
                .alias_name(alias)
                .target_key_id(&key.id)
                .send()
        })
        .await?;
        self.forget(&KeyId::new(alias));
        Ok(())
    }

    async fn delete_alias(&self, alias: &str) -> Result<(), HsmError> {
        let alias = alias_name(alias)?;
        self.call(
            &format!("deleting alias {alias}"),
            Idempotency::Idempotent,
            || self.client().delete_alias().alias_name(alias).send(),
        )
        .await?;
        self.forget(&KeyId::new(alias));
        Ok(())
    }

    async fn list_aliases(&self, key: Option<&KeyId>) -> Result<Vec<KeyAlias>, HsmError> {
        all_pages(|marker| async move {
            let page = self
                .call("listing aliases", Idempotency::Idempotent, || {
                    self.client()
                        .list_aliases()
                        .set_key_id(key.map(|k| k.id.clone()))
                        .set_marker(marker.clone())
                        .send()
                })
                .await?;
            // KMS's own aliases (alias/aws/...) name AWS-managed keys.
            let aliases = page.aliases().iter().filter_map(|a| {
                Some(KeyAlias::new(
                    a.alias_name()?,
                    KeyId::new(a.target_key_id()?),
                ))
            });
            let next = page.next_marker().filter(|_| page.truncated());
            Ok((aliases.collect(), next.map(str::to_owned)))
        })
        .await
    }

    async fn set_enabled(&self, key: &KeyId, enabled: bool) -> Result<(), HsmError> {
        let name = key.display_name();
        if enabled {
            self.call(&format!("enabling {name}"), Idempotency::Idempotent, || {
                self.client().enable_key().key_id(&key.id).send()
            })
            .await?;
        } else {
            self.call(
                &format!("disabling {name}"),
                Idempotency::Idempotent,
                || self.client().disable_key().key_id(&key.id).send(),
            )
            .await?;
        }
        Ok(())
    }

    async fn set_rotation(
        &self,
        key: &KeyId,
        on: bool,
        period_days: Option<u32>,
    ) -> Result<(), HsmError> {
        let name = key.display_name();
        if on {
            let period = period_days
                .map(|d| {
                    i32::try_from(d)
                        .ok()
                        .filter(|d| (90..=2560).contains(d))
                        .ok_or_else(|| {
                            HsmError::invalid(format!(
                                "a rotation period of {d} days: AWS KMS allows 90 to 2560"
                            ))
                        })
                })
                .transpose()?;
            self.call(
                &format!("turning rotation on for {name}"),
                Idempotency::Idempotent,
                || {
                    self.client()
                        .enable_key_rotation()
                        .key_id(&key.id)
                        .set_rotation_period_in_days(period)
                        .send()
                },
            )
            .await?;
        } else {
            self.call(
                &format!("turning rotation off for {name}"),
                Idempotency::Idempotent,
                || self.client().disable_key_rotation().key_id(&key.id).send(),
            )
            .await?;
        }
        Ok(())
    }

    async fn rotation_enabled(&self, key: &KeyId) -> Result<bool, HsmError> {
        let out = self
            .call(
                &format!("reading the rotation of {}", key.display_name()),
                Idempotency::Idempotent,
                || {
                    self.client()
                        .get_key_rotation_status()
                        .key_id(&key.id)
                        .send()
                },
            )
            .await?;
        Ok(out.key_rotation_enabled())
    }

    async fn schedule_deletion(
        &self,
        key: &KeyId,
        pending_days: u32,
    ) -> Result<KeyState, HsmError> {
        let days = i32::try_from(pending_days)
            .ok()
            .filter(|d| (7..=30).contains(d))
            .ok_or_else(|| {
                HsmError::invalid(format!(
                    "a deletion waiting period of {pending_days} days: AWS KMS allows 7 to 30"
                ))
            })?;
        let out = self
            .call(
                &format!("scheduling the deletion of {}", key.display_name()),
                Idempotency::Idempotent,
                || {
                    self.client()
                        .schedule_key_deletion()
                        .key_id(&key.id)
                        .pending_window_in_days(days)
                        .send()
                },
            )
            .await?;
        self.forget(key);
        Ok(KeyState::PendingDeletion {
            deletion_at: out.deletion_date().map(|d| d.secs()),
        })
    }

    async fn cancel_deletion(&self, key: &KeyId) -> Result<(), HsmError> {
        self.call(
            &format!("cancelling the deletion of {}", key.display_name()),
            Idempotency::Idempotent,
            || self.client().cancel_key_deletion().key_id(&key.id).send(),
        )
        .await?;
        // AWS leaves the key disabled; some implementations (local-kms) enable it. Disabled on
        // every service, so a key someone meant to destroy is not silently back in use.
        self.set_enabled(key, false).await?;
        self.forget(key);
        Ok(())
    }
}
