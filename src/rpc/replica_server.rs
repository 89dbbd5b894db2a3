//! The Replica gRPC service: the network face of [`Replica`], so that a
//! coordinator on another node can read, stamp and merge keys this node
//! holds. Thin on purpose: convert, call the replica, convert back. All the
//! logic is in `replica` and `core::object`.

use std::sync::Arc;

use async_trait::async_trait;
use tonic::{Request, Response, Status};

use super::convert::{clock_from_pb, key_from_pb, mutation_from_pb, object_from_pb, object_to_pb, required};
use super::pb;
use super::pb::replica_server::Replica as ReplicaRpc;
use crate::replica::Replica;

pub struct ReplicaService {
    replica: Arc<Replica>,
}

impl ReplicaService {
    pub fn new(replica: Arc<Replica>) -> ReplicaService {
        ReplicaService { replica }
    }
}

#[async_trait]
impl ReplicaRpc for ReplicaService {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let pb::GetRequest { partition, key } = request.into_inner();
        let key = key_from_pb(required(key, "key")?);
        let object = self.replica.get(partition, key).await?;
        Ok(Response::new(pb::GetResponse { object: Some(object_to_pb(&object)) }))
    }

    async fn coordinate(
        &self,
        request: Request<pb::CoordinateRequest>,
    ) -> Result<Response<pb::CoordinateResponse>, Status> {
        let pb::CoordinateRequest { partition, key, context, mutation } = request.into_inner();
        let key = key_from_pb(required(key, "key")?);
        let mutation = mutation_from_pb(mutation)?;
        let object = self.replica.coordinate(partition, key, clock_from_pb(&context), mutation).await?;
        Ok(Response::new(pb::CoordinateResponse { object: Some(object_to_pb(&object)) }))
    }

    async fn merge(&self, request: Request<pb::MergeRequest>) -> Result<Response<pb::MergeResponse>, Status> {
        let pb::MergeRequest { partition, key, object } = request.into_inner();
        let key = key_from_pb(required(key, "key")?);
        let object = object_from_pb(required(object, "object")?)?;
        self.replica.merge(partition, key, object).await?;
        Ok(Response::new(pb::MergeResponse {}))
    }
}
