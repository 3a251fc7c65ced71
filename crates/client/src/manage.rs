//! The calls that manage jobs rather than run them: groups, restart, pause and resume, a
//! job's details.

use ferry_wire::native::{
    ClientMessage, DaemonMessage, GroupAction, GroupInfo, JobDetails, JobId, JobInfo,
};

use crate::{Client, ClientError, Started};

/// What `pause` and `resume` act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One job.
    Job(JobId),
    /// A group by name.
    Group(String),
}

impl Target {
    fn split(self) -> (Option<JobId>, Option<String>) {
        match self {
            Target::Job(job) => (Some(job), None),
            Target::Group(group) => (None, Some(group)),
        }
    }
}

impl Client {
    /// Runs ended job `job` again as it ran; with `follow`, the new job's output and exit
    /// come as events.
    pub async fn restart(&mut self, job: JobId, follow: bool) -> Result<Started, ClientError> {
        let request = self.sender.next_request();
        self.sender
            .queue(crate::Queued::Plain(ClientMessage::Restart {
                request,
                job,
                follow,
            }))
            .await?;
        self.started(request).await
    }

    /// Stops a running job, or pauses a group.
    pub async fn pause(&mut self, target: Target) -> Result<(), ClientError> {
        self.pause_or_resume(target, true).await
    }

    /// Continues a paused job or group.
    pub async fn resume(&mut self, target: Target) -> Result<(), ClientError> {
        self.pause_or_resume(target, false).await
    }

    async fn pause_or_resume(&mut self, target: Target, pause: bool) -> Result<(), ClientError> {
        let request = self.sender.next_request();
        let (job, group) = target.split();
        let message = if pause {
            ClientMessage::Pause {
                request,
                job,
                group,
            }
        } else {
            ClientMessage::Resume {
                request,
                job,
                group,
            }
        };
        self.sender.queue(crate::Queued::Plain(message)).await?;
        self.done(request).await
    }

    /// A job's whole description; `env`: with its environment's values.
    pub async fn show(
        &mut self,
        job: JobId,
        env: bool,
    ) -> Result<(JobInfo, JobDetails), ClientError> {
        self.call(
            |request| ClientMessage::Show { request, job, env },
            |message| match message {
                DaemonMessage::Details { info, details, .. } => Some((info, details)),
                _ => None,
            },
        )
        .await
    }

    /// Makes, changes or removes group `name`.
    pub async fn group(&mut self, name: &str, action: GroupAction) -> Result<(), ClientError> {
        let request = self.sender.next_request();
        self.sender
            .queue(crate::Queued::Plain(ClientMessage::Group {
                request,
                name: name.to_owned(),
                action,
            }))
            .await?;
        self.done(request).await
    }

    /// The groups.
    pub async fn groups(&mut self) -> Result<Vec<GroupInfo>, ClientError> {
        self.call(
            |request| ClientMessage::ListGroups { request },
            |message| match message {
                DaemonMessage::Groups { groups, .. } => Some(groups),
                _ => None,
            },
        )
        .await
    }
}
