//! Which database a store reaches, as the database itself tells it: two
//! controllers that reach the same one under different URLs (a proxy, an
//! alias, another user) are told apart from two that do not.

use super::{Pool, Store, StoreError};

impl Store {
    /// The database this store reaches, stable across the URLs that name
    /// it: with PostgreSQL the cluster's system identifier and the database
    /// name (the scope of the advisory lock that keeps one controller per
    /// host acting), with SQLite the file's canonical path.
    ///
    /// Used to tell whether another controller on this host shares this
    /// database, and with it the host lock ([`Store::try_lock_host`]).
    pub async fn identity(&self) -> Result<String, StoreError> {
        match &self.pool {
            Pool::Postgres(p) => {
                self.bounded("reading the database's identity", async move {
                    let system: Result<(String, String), _> = sqlx::query_as(
                        "SELECT (SELECT system_identifier FROM pg_control_system())::text, \
                         current_database()::text",
                    )
                    .fetch_one(p)
                    .await;
                    if let Ok((system, database)) = system {
                        return Ok(format!("postgres:{system}/{database}"));
                    }
                    // A server that does not let this role read its control
                    // data: the address it was reached at stands in for it.
                    let (database,): (String,) = sqlx::query_as("SELECT current_database()::text")
                        .fetch_one(p)
                        .await
                        .map_err(|e| self.query_err("reading the database's identity", e))?;
                    let opts = p.connect_options();
                    Ok(format!(
                        "postgres-at:{}:{}/{database}",
                        opts.get_host(),
                        opts.get_port()
                    ))
                })
                .await
            }
            Pool::Sqlite(p) => {
                let file = p.connect_options().get_filename().to_path_buf();
                // An in-memory database is this process's alone.
                let shown = std::fs::canonicalize(&file).unwrap_or_else(|_| {
                    std::path::PathBuf::from(format!("memory:{}", std::process::id()))
                });
                Ok(format!("sqlite:{}", shown.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
    }

    #[tokio::test]
    async fn the_same_database_under_two_names_is_one_and_another_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        let one = Store::connect(&format!("sqlite://{}", a.display()))
            .await
            .unwrap();
        std::os::unix::fs::symlink(&a, dir.path().join("link.db")).unwrap();
        let link = format!("sqlite://{}/sub/../link.db", dir.path().display());
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let same = Store::open(&link, false).await.unwrap();
        let other = Store::connect(&format!("sqlite://{}", dir.path().join("b.db").display()))
            .await
            .unwrap();
        let id = one.identity().await.unwrap();
        assert_eq!(same.identity().await.unwrap(), id);
        assert_ne!(other.identity().await.unwrap(), id);

        // PostgreSQL: the same server and database through another URL
        // (a name instead of an address) is the same; the same server's
        // other database is not.
        let url = url::Url::parse(&postgres_url()).unwrap();
        let database = url.path().trim_start_matches('/').to_owned();
        let pg = Store::connect(url.as_str()).await.unwrap();
        let id = pg.identity().await.unwrap();
        assert!(id.starts_with("postgres:"), "{id}");
        assert!(id.ends_with(&format!("/{database}")), "{id}");
        if url.host_str() == Some("127.0.0.1") {
            let mut renamed = url.clone();
            renamed.set_host(Some("localhost")).unwrap();
            let again = Store::connect(renamed.as_str()).await.unwrap();
            assert_eq!(again.identity().await.unwrap(), id);
        }
        let mut elsewhere = url.clone();
        elsewhere.set_path(if database == "postgres" {
            "/template1"
        } else {
            "/postgres"
        });
        let other = Store::connect(elsewhere.as_str()).await.unwrap();
        let other = other.identity().await.unwrap();
        assert_ne!(other, id);
        let system = |id: &str| id.rsplit_once('/').map(|(system, _)| system.to_owned());
        assert_eq!(system(&other), system(&id));
    }
}
