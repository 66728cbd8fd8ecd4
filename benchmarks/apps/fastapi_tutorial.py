"""A FastAPI app shaped like the tutorial's: a ``yield`` database-session dependency, an OAuth2 bearer token
read by a dependency with a sub-dependency, a header parameter, and a ``response_model`` that filters a list
of items. Benchmark with ``GET /users/me/items?limit=5`` and ``Authorization: Bearer alice``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel

app = FastAPI()

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")


class FakeSession:
    """Stands in for a database session: opened and closed around each request."""

    def __init__(self) -> None:
        self.closed = False
        self.items = [
            {"id": i, "title": f"item {i}", "owner": "alice" if i % 2 else "bob", "secret": "not for you"}
            for i in range(20)
        ]

    def close(self) -> None:
        self.closed = True


async def get_db() -> AsyncIterator[FakeSession]:
    db = FakeSession()
    try:
        yield db
    finally:
        db.close()


class User(BaseModel):
    username: str
    disabled: bool = False


async def decode_token(token: Annotated[str, Depends(oauth2_scheme)]) -> User:
    if not token.isalnum():
        raise HTTPException(status_code=401, detail="Invalid token", headers={"WWW-Authenticate": "Bearer"})
    return User(username=token)


async def get_current_user(user: Annotated[User, Depends(decode_token)]) -> User:
    if user.disabled:
        raise HTTPException(status_code=400, detail="Inactive user")
    return user


class Item(BaseModel):
    id: int
    title: str
    owner: str


@app.get("/users/me/items", response_model=list[Item])
async def read_own_items(
    user: Annotated[User, Depends(get_current_user)],
    db: Annotated[FakeSession, Depends(get_db)],
    user_agent: Annotated[str | None, Header()] = None,
    limit: int = 10,
) -> list[dict[str, object]]:
    return [item for item in db.items if item["owner"] == user.username][:limit]
