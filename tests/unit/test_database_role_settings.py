from engine.config import Settings

RUNTIME = "postgresql://ledgerflow_app:app%40pw@db:5432/ledgerflow"
OWNER = "postgresql://ledgerflow:owner@db:5432/ledgerflow"


def test_without_an_owner_url_the_runtime_role_does_everything_as_before() -> None:
    settings = Settings(database_url=OWNER, owner_database_url="")
    assert settings.owner_url == OWNER
    assert settings.as_owner().database_url == OWNER
    assert settings.runtime_role == "ledgerflow"


def test_owner_settings_connect_as_the_owner_and_still_name_the_runtime_role_to_grant() -> None:
    settings = Settings(database_url=RUNTIME, owner_database_url=OWNER)
    owner = settings.as_owner()
    assert owner.database_url == OWNER and owner.owner_url == OWNER
    assert settings.runtime_role == owner.runtime_role == "ledgerflow_app"
    assert owner.as_owner() == owner
